"""The REST API and upstream-owned fields: an entry that comes from a gateway keeps the upstream's
definition (422 naming the field), its local choices stay editable, and a held change is approved
with POST /api/tools/{id}/approve-definition."""

from __future__ import annotations

import pytest
from django.utils import timezone

from registry.catalog_sync import gateway_catalog_apply
from registry.choices import ChangeStatus, SyncTrigger
from registry.models import DefinitionChange, Prompt, Resource, Tool
from tests.factories import GatewayFactory
from tests.sync_support import tool

pytestmark = pytest.mark.django_db


def sync(gateway, *, tools=(), resources=(), prompts=()):
    return gateway_catalog_apply(
        gateway=gateway,
        tools=list(tools),
        resources=list(resources),
        templates=[],
        prompts=list(prompts),
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
    sync(
        gateway,
        tools=[tool("echo", description="Echoes.")],
        resources=[{"uri": "test://a", "name": "a", "description": "A file."}],
        prompts=[{"name": "greet", "description": "Greets."}],
    )
    return gateway


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "Mine"),
        ("description", "Mine."),
        ("input_schema", {"type": "object", "properties": {"y": {"type": "string"}}}),
        ("output_schema", {"type": "object"}),
        ("annotations", {"readOnlyHint": True}),
    ],
)
def test_changing_an_upstream_tool_field_is_refused_naming_it(staff_client, gateway, field, value):
    echo = Tool.objects.get(name="echo")
    response = staff_client.patch_json(f"/api/tools/{echo.pk}", {field: value})
    assert response.status_code == 422
    body = response.json()
    assert body["detail"].startswith(f"{field} is owned by the upstream 'up'")
    assert field in body["errors"]
    if field == "description":
        assert "set description_override instead" in body["detail"]
    assert Tool.objects.get(pk=echo.pk).definition() == echo.definition()


def test_local_fields_of_an_upstream_tool_stay_editable(staff_client, gateway):
    echo = Tool.objects.get(name="echo")
    response = staff_client.patch_json(
        f"/api/tools/{echo.pk}",
        {"description_override": "Ours.", "tags": ["x"], "enabled": False, "timeout": 3.0, "description": "Echoes."},
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["description"], body["description_override"], body["drift_pending"]) == ("Echoes.", "Ours.", False)


def test_a_put_without_the_upstream_fields_keeps_them(staff_client, gateway):
    """PUT replaces what the caller owns; the upstream's fields, left out, stay as the upstream said."""
    echo = Tool.objects.get(name="echo")
    response = staff_client.put_json(
        f"/api/tools/{echo.pk}", {"name": "echo", "gateway": "up", "description_override": "Ours."}
    )
    assert response.status_code == 200, response.json()
    echo.refresh_from_db()
    assert (echo.description, echo.description_override) == ("Echoes.", "Ours.")


def test_local_tools_keep_every_field_editable(staff_client):
    created = staff_client.post_json(
        "/api/tools",
        {
            "name": "local",
            "integration_type": "function",
            "backend_config": {"function": "tests.fixtures.functions.add"},
        },
    )
    assert created.status_code == 201, created.json()
    response = staff_client.patch_json(f"/api/tools/{created.json()['id']}", {"description": "changed"})
    assert response.status_code == 200, response.json()
    assert response.json()["description"] == "changed"


def test_upstream_resource_and_prompt_fields_are_refused(staff_client, gateway):
    resource = Resource.objects.get(uri="test://a")
    response = staff_client.patch_json(f"/api/resources/{resource.pk}", {"description": "Mine."})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("description is owned by the upstream 'up'")
    assert staff_client.patch_json(f"/api/resources/{resource.pk}", {"enabled": False}).status_code == 200
    prompt = Prompt.objects.get(name="greet")
    response = staff_client.patch_json(f"/api/prompts/{prompt.pk}", {"arguments": [{"name": "who"}]})
    assert response.status_code == 422
    assert "arguments" in response.json()["errors"]


def test_approving_a_held_definition_through_the_api(staff_client, reader_client, gateway):
    echo = Tool.objects.get(name="echo")
    assert staff_client.post_json(f"/api/tools/{echo.pk}/approve-definition").status_code == 409
    sync(gateway, tools=[tool("echo", description="Echoes, now louder.")])
    shown = staff_client.get(f"/api/tools/{echo.pk}").json()
    assert (shown["description"], shown["drift_pending"]) == ("Echoes.", True)
    assert shown["drift_detected_at"]
    assert reader_client.post_json(f"/api/tools/{echo.pk}/approve-definition").status_code == 403

    response = staff_client.post_json(f"/api/tools/{echo.pk}/approve-definition")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["tool"], body["gateway"], body["status"], body["decided_by"]) == ("echo", "up", "approved", "staff")
    assert [item["field"] for item in body["diff"]] == ["description"]
    assert "+Echoes, now louder." in body["diff"][0]["text"]
    assert DefinitionChange.objects.get(tool=echo).status == ChangeStatus.APPROVED
    shown = staff_client.get(f"/api/tools/{echo.pk}").json()
    assert (shown["description"], shown["drift_pending"]) == ("Echoes, now louder.", False)
    assert staff_client.post_json(f"/api/tools/{echo.pk}/approve-definition").status_code == 409
    assert staff_client.post_json("/api/tools/999999/approve-definition").status_code == 404


def test_rejecting_a_held_definition_through_the_api(staff_client, reader_client, gateway):
    echo = Tool.objects.get(name="echo")
    assert staff_client.post_json(f"/api/tools/{echo.pk}/reject-definition").status_code == 409
    sync(gateway, tools=[tool("echo", description="Echoes, now louder.")])
    assert reader_client.post_json(f"/api/tools/{echo.pk}/reject-definition").status_code == 403
    response = staff_client.post_json(f"/api/tools/{echo.pk}/reject-definition")
    assert response.status_code == 200, response.json()
    assert (response.json()["status"], response.json()["decided_by"]) == ("rejected", "staff")
    shown = staff_client.get(f"/api/tools/{echo.pk}").json()
    assert (shown["description"], shown["drift_pending"]) == ("Echoes.", False)
    assert staff_client.post_json("/api/tools/999999/reject-definition").status_code == 404
