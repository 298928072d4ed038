"""The tool admin for wrapped tools: add and change each kind, the definition's per-kind help, the
kinds' rules shown on their fields, write-only credentials, and the links to the test call and the
OpenAPI import. The definitions are valid under docs/tool-backends.md."""

import json

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from registry import events, services, tool_kinds
from registry.choices import IntegrationType
from registry.models import Tool
from tests.registry.test_admin import field_errors, form_values
from tests.registry.test_tool_management import CLI, FUNCTION, OPEN_REST, REST, TOKEN

ADD = "/admin/registry/tool/add/"


@pytest.fixture
def client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


def change_url(tool: Tool) -> str:
    return f"/admin/registry/tool/{tool.pk}/change/"


def add_form(definition: dict, **overrides) -> dict:
    """The add form as a person fills it for a definition (credentials typed into their boxes)."""
    data = {
        "name": definition["name"],
        "title": "",
        "description": definition.get("description", ""),
        "enabled": "on",
        "tags": "[]",
        "timeout": "",
        "integration_type": definition["integration_type"],
        "gateway": "",
        "original_name": "",
        "backend_config": json.dumps(definition["backend_config"]),
        "input_schema": json.dumps(definition.get("input_schema", {"type": "object", "properties": {}})),
        "output_schema": "",
        "annotations": "{}",
    }
    data.update(definition.get("credentials", {}))
    data.update(overrides)
    return data


def create(definition: dict) -> Tool:
    return services.entry_create(Tool, data=json.loads(json.dumps(definition)))


# ---------------------------------------------------------------------------------------------
# Add and change each kind
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("definition", [REST, CLI, FUNCTION], ids=["rest", "cli", "function"])
def test_adding_each_kind_stores_it_through_the_services(client, definition):
    """The add form stores a REST (with its token), CLI or function tool: one catalog change."""
    version = events.catalog_version()
    response = client.post(ADD, add_form(definition))
    assert response.status_code == 302, field_errors(response)
    tool = Tool.objects.get(name=definition["name"])
    assert tool.integration_type == definition["integration_type"]
    assert tool.backend_config["function" if definition is FUNCTION else "command" if definition is CLI else "url"]
    assert tool.get_credentials() == definition.get("credentials", {})
    assert events.catalog_version() == version + 1


@pytest.mark.parametrize("definition", [REST, CLI, FUNCTION], ids=["rest", "cli", "function"])
def test_changing_each_kind_keeps_what_was_not_touched(client, definition):
    """Saving the change form as rendered, with a new description, keeps the definition and secrets."""
    tool = create(definition)
    url = change_url(tool)
    response = client.post(url, {**form_values(client.get(url)), "description": "Edited."})
    assert response.status_code == 302, field_errors(response)
    stored = Tool.objects.get(pk=tool.pk)
    assert stored.description == "Edited."
    assert stored.backend_config == tool.backend_config
    assert stored.get_credentials() == definition.get("credentials", {})


def test_the_add_page_shows_the_example_of_the_chosen_kind(client):
    """?integration_type=cli preselects the kind; its help and example are open, the others folded."""
    html = client.get(ADD + "?integration_type=cli").content.decode()
    assert '<details data-kind="cli" open>' in html
    assert '<details data-kind="rest">' in html
    assert "&quot;command&quot;: &quot;/usr/bin/grep&quot;" in html
    assert "Allowed here: tests.fixtures.functions.*" in html


def test_the_change_page_shows_the_integration_type_and_its_help(client):
    tool = create(REST)
    response = client.get(change_url(tool))
    form = response.context["adminform"].form
    assert form["integration_type"].value() == "rest"
    assert '<details data-kind="rest" open>' in response.content.decode()


def test_a_kinds_rule_is_shown_on_backend_config(client, monkeypatch):
    """What registry.tool_kinds refuses appears on the backend_config field; nothing is stored."""

    def refuse(tool):
        raise ValidationError({"backend_config": "url: 'ftp://x' must be an http or https URL template."})

    monkeypatch.setitem(tool_kinds._CLEANERS, IntegrationType.REST, refuse)
    response = client.post(ADD, add_form(OPEN_REST))
    assert response.status_code == 200
    assert field_errors(response) == {"backend_config": ["url: 'ftp://x' must be an http or https URL template."]}
    assert not Tool.objects.exists()


def test_invalid_json_in_the_definition_is_an_error_on_its_field(client):
    response = client.post(ADD, add_form(CLI, backend_config='{"command": '))
    assert list(field_errors(response)) == ["backend_config"]


def test_a_credentials_rule_is_shown_beside_the_box_of_the_auth_type(client, monkeypatch):
    """A bearer tool saved without a token: the rule's error is on the token box."""

    def needs_token(tool):
        if "token" not in tool.get_credentials():
            raise ValidationError({"credentials": "Authentication 'bearer' needs the credentials token."})

    monkeypatch.setitem(tool_kinds._CLEANERS, IntegrationType.REST, needs_token)
    response = client.post(ADD, add_form(REST, token=""))
    assert response.status_code == 200
    assert field_errors(response) == {"token": ["Authentication 'bearer' needs the credentials token."]}
    assert client.post(ADD, add_form(REST)).status_code == 302  # typed: the rule sees it before the save


# ---------------------------------------------------------------------------------------------
# Write-only credentials
# ---------------------------------------------------------------------------------------------


def test_stored_credentials_are_never_rendered(client):
    """The change page shows which credentials are stored, never their values or ciphertext."""
    tool = create(REST)
    response = client.get(change_url(tool))
    html = response.content.decode()
    assert TOKEN not in html
    assert tool.credentials_encrypted not in html
    assert "stored: token" in html
    assert response.context["adminform"].form["token"].value() is None


def test_a_typed_secret_replaces_only_its_own_value(client):
    """Basic auth: typing a new password keeps the stored username (blank boxes keep what is stored)."""
    basic = OPEN_REST | {
        "backend_config": OPEN_REST["backend_config"] | {"auth": {"type": "basic"}},
        "credentials": {"username": "svc", "password": "old-password"},
    }
    tool = create(basic)
    url = change_url(tool)
    response = client.post(url, {**form_values(client.get(url)), "password": "new-password"})
    assert response.status_code == 302, field_errors(response)
    assert Tool.objects.get(pk=tool.pk).get_credentials() == {"username": "svc", "password": "new-password"}


def test_changing_the_auth_type_drops_the_secrets_of_the_old_one(client):
    """Bearer to API key with a key typed: the stored token goes, the key is stored."""
    tool = create(REST)
    url = change_url(tool)
    config = REST["backend_config"] | {"auth": {"type": "api_key", "in": "header", "name": "X-API-Key"}}
    values = {**form_values(client.get(url)), "backend_config": json.dumps(config), "key": "api-key-1"}
    response = client.post(url, values)
    assert response.status_code == 302, field_errors(response)
    assert Tool.objects.get(pk=tool.pk).get_credentials() == {"key": "api-key-1"}


def test_the_clear_checkbox_removes_the_credentials(client):
    tool = create(OPEN_REST | {"credentials": {"token": "left-over"}})
    url = change_url(tool)
    response = client.post(url, {**form_values(client.get(url)), "clear_credentials": "on"})
    assert response.status_code == 302, field_errors(response)
    assert Tool.objects.get(pk=tool.pk).credentials_encrypted == ""


def test_clearing_and_typing_new_credentials_at_once_is_an_error(client):
    tool = create(REST)
    url = change_url(tool)
    response = client.post(url, {**form_values(client.get(url)), "clear_credentials": "on", "token": "t"})
    assert response.status_code == 200
    assert list(field_errors(response)) == ["clear_credentials"]
    assert Tool.objects.get(pk=tool.pk).get_credentials() == {"token": TOKEN}


def test_a_tool_that_stops_being_rest_must_let_go_of_its_credentials(client):
    """Switching a REST tool with credentials to CLI is refused beside the clear checkbox (not a crash);
    ticking it makes the switch go through."""
    tool = create(REST)
    url = change_url(tool)
    values = {
        **form_values(client.get(url)),
        "integration_type": "cli",
        "backend_config": json.dumps(CLI["backend_config"]),
        "input_schema": json.dumps(CLI["input_schema"]),
    }
    response = client.post(url, values)
    assert response.status_code == 200
    assert field_errors(response) == {"clear_credentials": ["Only REST tools hold credentials."]}
    assert client.post(url, values | {"clear_credentials": "on"}).status_code == 302
    stored = Tool.objects.get(pk=tool.pk)
    assert (stored.integration_type, stored.credentials_encrypted) == ("cli", "")


# ---------------------------------------------------------------------------------------------
# Links to the pages that need the runtime
# ---------------------------------------------------------------------------------------------


def test_the_change_page_links_to_the_test_call(client):
    tool = create(CLI)
    assert f'href="/admin/registry/tool/{tool.pk}/test-call/"' in client.get(change_url(tool)).content.decode()


def test_the_tool_list_links_to_the_openapi_import(client):
    assert 'href="/admin/registry/tool/import-openapi/"' in client.get("/admin/registry/tool/").content.decode()
