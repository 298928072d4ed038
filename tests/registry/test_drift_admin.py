"""The tool admin and upstream tools: the upstream's fields are read-only on a gateway's tool, its
local ones (description_override, tags, ...) editable; a held change is shown with its diff, found by
the "definition change pending" filter and approved by an action."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from registry.catalog_sync import gateway_catalog_apply
from registry.choices import ChangeStatus, SyncTrigger
from registry.models import DefinitionChange, Tool
from tests.factories import GatewayFactory, PromptFactory, ResourceFactory
from tests.registry.test_admin import form_values
from tests.sync_support import tool

pytestmark = pytest.mark.django_db
LIST = "/admin/registry/tool/"


@pytest.fixture
def client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


def sync(gateway, *tools):
    gateway_catalog_apply(
        gateway=gateway,
        tools=list(tools),
        resources=[],
        templates=[],
        prompts=[],
        detected_era="legacy",
        protocol_version="2025-11-25",
        server_info={},
        capabilities={},
        trigger=SyncTrigger.MANUAL,
        started_at=timezone.now(),
    )


@pytest.fixture
def gateway():
    gateway = GatewayFactory(name="up")
    sync(gateway, tool("echo", description="Echoes."), tool("sum", description="Adds."))
    return gateway


def change_url(tool: Tool) -> str:
    return f"/admin/registry/tool/{tool.pk}/change/"


def test_upstream_fields_are_read_only_and_local_ones_saved(client, gateway):
    echo = Tool.objects.get(name="echo")
    page = client.get(change_url(echo))
    values = form_values(page)
    for field in ("title", "description", "input_schema", "output_schema", "annotations"):
        assert field not in values
    assert "description_override" in values
    response = client.post(change_url(echo), {**values, "description_override": "Ours.", "tags": '["x"]'})
    assert response.status_code == 302, response.content.decode()[:2000]
    echo.refresh_from_db()
    assert (echo.description, echo.description_override, echo.tags) == ("Echoes.", "Ours.", ["x"])


def test_a_held_change_is_shown_filtered_and_approved_by_the_action(client, gateway):
    sync(gateway, tool("echo", description="Echoes, louder."), tool("sum", description="Adds."))
    echo = Tool.objects.get(name="echo")
    page = client.get(change_url(echo)).content.decode()
    assert "Changed upstream definition, waiting for approval" in page
    assert "+Echoes, louder." in page

    listed = client.get(LIST, {"drift": "yes"}).content.decode()
    assert f'href="/admin/registry/tool/{echo.pk}/change/' in listed
    assert f"/admin/registry/tool/{Tool.objects.get(name='sum').pk}/change/" not in listed

    both = [str(echo.pk), str(Tool.objects.get(name="sum").pk)]
    response = client.post(LIST, {"action": "approve_definitions", "_selected_action": both}, follow=True)
    assert "Approved the changed definitions of 1 tools: echo." in response.content.decode()
    echo.refresh_from_db()
    assert (echo.description, echo.pending_definition) == ("Echoes, louder.", None)
    change = DefinitionChange.objects.get(tool=echo)
    assert (change.status, change.decided_by) == (ChangeStatus.APPROVED, "admin")
    assert "waiting for approval" not in client.get(change_url(echo)).content.decode()


@pytest.mark.parametrize(
    ("make", "url", "upstream_fields", "local_field"),
    [
        (
            lambda gw: ResourceFactory(gateway=gw, text=None, uri="up://r", title="T", description="D"),
            "/admin/registry/resource/{pk}/change/",
            ("name", "title", "description", "mime_type", "annotations"),
            "enabled",
        ),
        (
            lambda gw: PromptFactory(gateway=gw, template="", name="p", title="T", description="D"),
            "/admin/registry/prompt/{pk}/change/",
            ("title", "description", "arguments"),
            "enabled",
        ),
    ],
)
def test_an_upstream_resource_or_prompt_has_its_upstream_fields_read_only(
    client, make, url, upstream_fields, local_field
):
    """A resource or prompt from a gateway: what its upstream owns is shown, not editable (a sync writes it)."""
    entry = make(GatewayFactory(name="srv"))
    values = form_values(client.get(url.format(pk=entry.pk)))
    for field in upstream_fields:
        assert field not in values, field
    assert local_field in values


def test_the_reject_action_keeps_the_approved_definitions(client, gateway):
    sync(gateway, tool("echo", description="Echoes, louder."), tool("sum", description="Adds."))
    echo = Tool.objects.get(name="echo")
    response = client.post(LIST, {"action": "reject_definitions", "_selected_action": [str(echo.pk)]}, follow=True)
    assert "Rejected the changed definitions of 1 tools: echo." in response.content.decode()
    echo.refresh_from_db()
    assert (echo.description, echo.pending_definition) == ("Echoes.", None)
    assert DefinitionChange.objects.get(tool=echo).status == ChangeStatus.REJECTED


def test_the_gateway_page_shows_its_runs_diff_and_links_its_held_changes(client, gateway):
    sync(gateway, tool("echo", description="Echoes, louder."), tool("sum", description="Adds."), tool("new"))
    page = client.get(f"/admin/registry/gateway/{gateway.pk}/change/").content.decode()
    assert "1 added, 1 held" in page
    assert "+ tool new" in page
    assert "held tool echo" in page
    link = f"/admin/registry/tool/?gateway__id__exact={gateway.pk}&amp;drift=yes"
    assert f'echo (<a href="{link}">review, approve or reject</a>)' in page
    listed = client.get(link.replace("&amp;", "&"))
    assert listed.status_code == 200
    text = listed.content.decode()
    assert f"/admin/registry/tool/{Tool.objects.get(name='echo').pk}/change/" in text
    assert f"/admin/registry/tool/{Tool.objects.get(name='sum').pk}/change/" not in text
