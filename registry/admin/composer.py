"""The virtual-server composer: pick tools, resources, resource templates, prompts and whole gateways
across gateways with filters, see the tools/list a client of the server would get with the selection
before saving it, and copy the client configuration. Mounted by ``VirtualServerAdmin.get_urls`` at
``virtualserver/compose/`` (a new server) and ``virtualserver/<id>/compose/``.

One form, posted whole: without JavaScript its buttons "Filter", "Preview" and "Save" (``action``)
render the page again with the posted selection kept; with htmx, a changed filter or a ticked box posts
the same form and gets back the lists and the preview (``_composer_parts.html``). An entry is listed once:
chosen entries under "Chosen" whatever the filters, the others among the candidates. Reads go through
``registry.selectors`` (the preview through the rule the MCP snapshot applies), the save through
``registry.services`` like the REST API's, so it is validated, announced and versioned the same way.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from registry import selectors, services
from registry.choices import Health
from registry.exceptions import CatalogError, Conflict
from registry.models import VirtualServer
from registry.selectors import COMPOSER_KINDS, CandidateFilters, Selection
from registry.validators import validate_slug

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

TEMPLATES = "admin/registry/virtualserver/"
CANDIDATE_LIMIT = 100  # per kind; the filters narrow a larger catalog
KIND_LABELS = {
    "tool": "tool",
    "resource": "resource",
    "template": "resource template",
    "prompt": "prompt",
    "gateway": "whole gateway",
}


def client_configuration(*, name: str, base_url: str) -> list[tuple[str, str]]:
    """What a person copies to connect a client to the virtual server ``name`` of the gateway at
    ``base_url``: (heading, text) blocks for any MCP client over Streamable HTTP, desktop clients through
    the stdio wrapper, and the official ``mcp`` SDK. The server's page and the composer both show it."""
    url = f"{base_url}/servers/{name}/mcp"
    desktop = json.dumps(
        {
            "mcpServers": {
                name: {
                    "command": "/path/to/mcp-gateway/scripts/mcp-gateway-stdio",
                    "args": ["--url", url],
                    "env": {"MCP_GATEWAY_TOKEN": "<a token: the admin's Issue a token, or manage.py issue_token>"},
                }
            }
        },
        indent=2,
    )
    sdk = (
        "import httpx2\n"
        "from mcp import Client\n"
        "from mcp.client.streamable_http import streamable_http_client\n\n"
        'async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:\n'
        f'    async with Client(streamable_http_client("{url}", http_client=http)) as client:\n'
        "        print((await client.list_tools()).tools)"
    )
    return [
        ("Streamable HTTP (any MCP client)", f"URL: {url}\nHeader: Authorization: Bearer <token>"),
        ("Desktop clients (stdio wrapper)", desktop),
        ("Python (the official mcp SDK)", sdk),
    ]


class IdsField(forms.Field):
    """The ids of the ticked boxes of one kind (any order, repeats dropped)."""

    widget = forms.MultipleHiddenInput
    default_error_messages = {"invalid": "%(value)s is not the id of a catalog entry; pick entries from the lists."}

    def to_python(self, value: Any) -> tuple[int, ...]:
        ids: dict[int, None] = {}
        for item in value or ():
            try:
                number = int(item)
            except (TypeError, ValueError):
                number = -1
            if number < 1:
                raise ValidationError(self.error_messages["invalid"], code="invalid", params={"value": repr(item)})
            ids[number] = None
        return tuple(ids)


class ComposerForm(forms.Form):
    """The server's own fields and its selection. The services validate them on save (a missing or
    malformed name, a name taken, entries gone) and their errors come back on these fields."""

    name = forms.CharField(
        max_length=64,
        required=False,
        validators=[validate_slug],
        help_text="Lowercase letters, digits, '-' and '_': the server is served at /servers/<name>/mcp.",
    )
    title = forms.CharField(max_length=256, required=False)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "cols": 60}), required=False)
    enabled = forms.BooleanField(required=False, help_text="A disabled server is not served at all.")
    tools = IdsField(required=False)
    resources = IdsField(required=False)
    resource_templates = IdsField(required=False)
    prompts = IdsField(required=False)
    gateways = IdsField(required=False)

    MEMBERS = ("tools", "resources", "resource_templates", "prompts", "gateways")

    def selection(self) -> Selection:
        """The selection posted (the valid fields of it), or the initial one of an unbound form."""
        if not self.is_bound:
            return Selection(**{field: tuple(self.initial.get(field, ())) for field in self.MEMBERS})
        self.is_valid()
        return Selection(**{field: self.cleaned_data.get(field, ()) for field in self.MEMBERS})


class FilterForm(forms.Form):
    """The candidates' filters (an invalid value is shown as an error and filters nothing)."""

    q = forms.CharField(
        label="Search",
        required=False,
        max_length=200,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "name, title, description"}),
    )
    kind = forms.ChoiceField(required=False, choices=[("", "any kind"), *KIND_LABELS.items()])
    gateway = forms.ChoiceField(required=False)
    tag = forms.ChoiceField(label="Tag (tools)", required=False)
    health = forms.ChoiceField(
        label="Gateway health",
        required=False,
        choices=[("", "any"), *Health.choices, ("local", "local (no gateway)")],
    )
    enabled_only = forms.BooleanField(label="Enabled only", required=False)

    def __init__(self, *args: Any, gateways: list[tuple[str, str]], tags: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sources = [("", "any"), ("local", "local (no gateway)"), *gateways]
        cast(forms.ChoiceField, self.fields["gateway"]).choices = sources
        cast(forms.ChoiceField, self.fields["tag"]).choices = [("", "any"), *((tag, tag) for tag in tags)]

    def filters(self) -> CandidateFilters:
        self.is_valid()
        data = {name: value for name, value in self.cleaned_data.items() if name in self.fields}
        return CandidateFilters(**data)


def compose_view(request: HttpRequest, model_admin: ModelAdmin[VirtualServer], object_id: str | None) -> HttpResponse:
    """The composer of a stored server (``object_id``) or of a new one."""
    server = None
    if object_id is not None:
        server = VirtualServer.objects.filter(pk=object_id).first() if object_id.isdigit() else None
        if server is None:
            messages.warning(request, f"There is no virtual server with id {object_id!r}; compose a new one.")
            return HttpResponseRedirect(reverse("admin:registry_virtualserver_compose_new"))
        if not model_admin.has_change_permission(request, server):
            raise PermissionDenied
    elif not model_admin.has_add_permission(request):
        raise PermissionDenied

    gateways = list(selectors.composer_gateways())
    filter_form = FilterForm(
        request.POST if request.method == "POST" else request.GET,
        gateways=[(str(g.pk), g.name) for g in gateways],
        tags=selectors.tool_tags(),
    )
    if request.method == "POST":
        form = ComposerForm(request.POST)
        action = (request.POST.get("action") or "filter").lower()  # the buttons' labels: Filter, Preview, Save
    else:
        form = ComposerForm(initial=_initial(server))
        action = "filter"
    selection = form.selection()
    chosen, missing = selectors.composer_chosen(selection)
    if form.is_bound:
        for kind, ids in missing.items():
            field = COMPOSER_KINDS[kind][1]
            form.add_error(
                field,
                f"No {KIND_LABELS[kind]} with id {', '.join(map(str, ids))} (deleted meanwhile?); "
                "it is left out of the selection.",
            )
        selection = Selection(**{field: tuple(c.pk for c in chosen if c.field == field) for field in form.MEMBERS})

    if action == "save" and form.is_bound and not form.errors:
        saved = _save(request, model_admin, form, server, chosen)
        if saved is not None:
            return HttpResponseRedirect(reverse("admin:registry_virtualserver_compose", args=[saved.pk]))

    name = form.cleaned_data.get("name", "") if form.is_bound else (server.name if server else "")
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": f"Compose {server.name}" if server else "Compose a virtual server",
        "server": server,
        "form": form,
        "filter_form": filter_form,
        "chosen": chosen,
        "chosen_gateways": {c.key for c in chosen if c.kind == "gateway"},
        "candidates": selectors.composer_candidates(
            filters=filter_form.filters(), exclude=selection, limit=CANDIDATE_LIMIT
        ),
        "preview": _preview(selection),
        "enabled": form.cleaned_data.get("enabled", False) if form.is_bound else (server.enabled if server else True),
        "name": name,
        "configuration": client_configuration(name=name, base_url=request.build_absolute_uri("/").rstrip("/"))
        if name and "name" not in form.errors
        else [],
        "compose_url": request.path,
    }
    partial = getattr(request, "htmx", False) and request.method == "POST" and action != "save"
    template = "_composer_parts.html" if partial else "compose.html"
    return TemplateResponse(request, TEMPLATES + template, context)


def _initial(server: VirtualServer | None) -> dict[str, Any]:
    if server is None:
        return {"enabled": True}
    selection = selectors.server_selection(server)
    return {
        "name": server.name,
        "title": server.title,
        "description": server.description,
        "enabled": server.enabled,
        **{field: selection.ids(kind) for kind, (_model, field) in COMPOSER_KINDS.items()},
    }


def _preview(selection: Selection) -> dict[str, Any]:
    served = selectors.selection_served(selection)
    tools = [
        {
            **tool,
            "input_schema_json": json.dumps(tool["input_schema"], indent=2, ensure_ascii=False),
            "output_schema_json": json.dumps(tool["output_schema"], indent=2, ensure_ascii=False)
            if tool["output_schema"]
            else "",
            "annotations_json": json.dumps(tool["annotations"], ensure_ascii=False) if tool["annotations"] else "",
        }
        for tool in served.tools
    ]
    return {
        "tools": tools,
        "resources": served.resources,
        "resource_templates": served.resource_templates,
        "prompts": served.prompts,
        "grouped": sorted({t["redundancy_group"] for t in tools if t["redundancy_group"]}),
    }


def _save(
    request: HttpRequest,
    model_admin: ModelAdmin[VirtualServer],
    form: ComposerForm,
    server: VirtualServer | None,
    chosen: list[selectors.Candidate],
) -> VirtualServer | None:
    """Store the server through the catalog's services (members by natural key, as the REST API sends
    them); a service's error goes on the form and None comes back."""
    data: dict[str, Any] = {field: form.cleaned_data[field] for field in ("name", "title", "description", "enabled")}
    for field in form.MEMBERS:
        data[field] = [c.key for c in chosen if c.field == field]
    try:
        if server is None:
            saved = services.entry_create(VirtualServer, data=data)
            model_admin.log_addition(request, saved, [{"added": {}}])
        else:
            saved = services.entry_update(server, data=data)
            model_admin.log_change(request, saved, "Composed in the composer.")
    except CatalogError as exc:
        if server is not None:
            server.refresh_from_db()  # the service set the refused values on it before it rolled back
        errors = exc.errors or {"__all__": [exc.message]}
        if isinstance(exc, Conflict):  # "Already taken." says less than the message
            errors = {key: [exc.message] for key in errors}
        for field, found in errors.items():
            form.add_error(field if field in form.fields else None, found)
        return None
    messages.success(request, f"Saved the virtual server {saved.name}: it is served at /servers/{saved.name}/mcp.")
    return saved
