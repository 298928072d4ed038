"""The Django admin: pages render, search and filters work, validation errors show on their field,
bulk actions change rows, writes bump the catalog version, and upstream credentials stay write-only."""

import pytest
from django import forms
from django.test import Client

from registry import events, services
from registry.choices import AuthType
from registry.exceptions import Conflict
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, RevokedToken, Tool, VirtualServer
from tests.factories import (
    GatewayFactory,
    PromptFactory,
    ResourceFactory,
    ResourceTemplateFactory,
    ToolFactory,
    VirtualServerFactory,
)

MODELS = ["gateway", "tool", "resource", "resourcetemplate", "prompt", "virtualserver", "revokedtoken"]
TOKEN = "admin-bearer-token-5d1c"
PASSWORD = "admin-basic-password-77aa"


@pytest.fixture
def client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def catalog(db):
    """A few entries of every kind, with something to search and filter for."""
    web = GatewayFactory(name="web-upstream", description="The web one")
    local = services.entry_create(
        Gateway, data={"name": "local-proc", "transport": "stdio", "command": "mcp-time", "args": ["--utc"]}
    )
    ToolFactory(name="web.search", gateway=web, tags=["search", "web"])
    ToolFactory(name="clock.now", gateway=local, tags=["time"], enabled=False)
    services.entry_create(
        Tool,
        data={"name": "rest.lookup", "integration_type": "rest", "backend_config": {"url": "https://api.example.com"}},
    )
    ResourceFactory(uri="file:///readme.md", name="readme", mime_type="text/markdown")
    ResourceFactory(uri="file:///notes.txt", name="notes")
    ResourceTemplateFactory(uri_template="file:///logs/{date}.txt", name="logs", gateway=web)
    PromptFactory(name="summarise")
    server = VirtualServerFactory(name="main", title="Main server")
    server.tools.set(Tool.objects.filter(name="web.search"))
    RevokedToken.objects.create(jti="jti-123", subject="bob", reason="lost laptop")
    return {"web": web, "local": local, "server": server}


def form_values(response) -> dict:
    """The POST data that submits an admin form as rendered (checkboxes as a browser sends them)."""
    form = response.context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if isinstance(field.widget, forms.CheckboxInput):
            if value:
                data[name] = "on"
            continue
        data[name] = "" if value is None else value
    return data


def field_errors(response) -> dict:
    return response.context["adminform"].form.errors


def non_field_errors(response) -> list[str]:
    return [error["message"] for error in response.context["adminform"].form.non_field_errors().get_json_data()]


def shown(response) -> list[str]:
    """The objects listed on a changelist page."""
    return [str(obj) for obj in response.context["cl"].result_list]


# ---------------------------------------------------------------------------------------------
# Pages render
# ---------------------------------------------------------------------------------------------


def test_login_page_renders_and_names_the_product(db):
    """/admin/login/ answers 200 and says MCP Gateway."""
    response = Client().get("/admin/login/")
    assert response.status_code == 200
    assert "MCP Gateway" in response.content.decode()


def test_admin_needs_a_login(db):
    """An anonymous visitor is sent to the login page."""
    response = Client().get("/admin/registry/tool/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_index_lists_the_catalog(client):
    """The admin index shows the site header and every catalog model."""
    response = client.get("/admin/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "MCP Gateway" in html
    assert "Catalog administration" in html
    for path in MODELS:
        assert f"/admin/registry/{path}/" in html


@pytest.mark.parametrize("model", MODELS)
def test_changelist_and_add_pages_render(client, catalog, model):
    """Each model's changelist and add form answer 200."""
    assert client.get(f"/admin/registry/{model}/").status_code == 200
    assert client.get(f"/admin/registry/{model}/add/").status_code == 200


@pytest.mark.parametrize(
    ("model", "obj"),
    [
        (Gateway, lambda: Gateway.objects.get(name="local-proc")),
        (Tool, lambda: Tool.objects.get(name="web.search")),
        (Resource, lambda: Resource.objects.get(uri="file:///readme.md")),
        (ResourceTemplate, lambda: ResourceTemplate.objects.first()),
        (Prompt, lambda: Prompt.objects.first()),
        (VirtualServer, lambda: VirtualServer.objects.get(name="main")),
        (RevokedToken, lambda: RevokedToken.objects.first()),
    ],
)
def test_change_pages_render(client, catalog, model, obj):
    """Each model's change form answers 200."""
    response = client.get(f"/admin/registry/{model._meta.model_name}/{obj().pk}/change/")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("model", "query", "expected"),
    [
        ("gateway", "q=web", ["web-upstream"]),
        ("gateway", "q=mcp-time", ["local-proc"]),
        ("gateway", "transport__exact=stdio", ["local-proc"]),
        ("gateway", "health__exact=unknown", ["local-proc", "web-upstream"]),
        ("gateway", "auth_type__exact=none&enabled__exact=1", ["local-proc", "web-upstream"]),
        ("tool", "q=search", ["web.search"]),
        ("tool", "enabled__exact=0", ["clock.now"]),
        ("tool", "integration_type__exact=rest", ["rest.lookup"]),
        ("tool", "tag=time", ["clock.now"]),
        ("tool", "tag=web", ["web.search"]),
        ("tool", "gateway__id__exact={web}", ["web.search"]),
        ("resource", "q=readme", ["file:///readme.md"]),
        ("resource", "mime_type=text/markdown", ["file:///readme.md"]),
        ("resourcetemplate", "q=logs", ["file:///logs/{date}.txt"]),
        ("resourcetemplate", "gateway__id__exact={web}", ["file:///logs/{date}.txt"]),
        ("prompt", "q=summarise&enabled__exact=1", ["summarise"]),
        ("virtualserver", "q=Main", ["main"]),
        ("virtualserver", "enabled__exact=1", ["main"]),
        ("revokedtoken", "q=laptop", ["jti-123"]),
    ],
)
def test_changelist_search_and_filters(client, catalog, model, query, expected):
    """?q= searches the listed fields and each list filter narrows the rows."""
    response = client.get(f"/admin/registry/{model}/?" + query.format(web=catalog["web"].pk))
    assert response.status_code == 200
    assert sorted(shown(response)) == expected


def test_server_changelist_counts_what_each_server_serves(client, catalog):
    """The virtual-server list shows how many tools each server serves (chosen ones and its gateways'), and
    its MCP endpoint; a server's page lists its endpoints."""
    response = client.get("/admin/registry/virtualserver/")
    server = response.context["cl"].result_list[0]
    assert server.tools_served == 1
    page = response.content.decode()
    assert f"/servers/{server.name}/mcp" in page
    page = client.get(f"/admin/registry/virtualserver/{server.pk}/change/").content.decode()
    for suffix in ("mcp", "sse", "ws", "rpc"):
        assert f"<code>/servers/{server.name}/{suffix}</code>" in page
    # the composer's preview and the configuration a client needs, with this gateway's own address
    assert 'id="served-tools"' in page
    assert f"URL: http://testserver/servers/{server.name}/mcp" in page
    assert "scripts/mcp-gateway-stdio" in page
    assert "streamable_http_client(&quot;http://testserver/servers/" in page


def test_staff_without_permissions_cannot_use_the_catalog_admin(staff_user):
    """A staff user without model permissions gets 403 on the catalog pages."""
    client = Client()
    client.force_login(staff_user)
    assert client.get("/admin/registry/tool/").status_code == 403


# ---------------------------------------------------------------------------------------------
# Tools: validation on the field, writes bump the version, formatted JSON
# ---------------------------------------------------------------------------------------------


def tool_form(gateway: Gateway, **overrides) -> dict:
    data = {
        "name": "weather.get",
        "title": "Weather",
        "description": "",
        "enabled": "on",
        "tags": '["weather", "api", "weather"]',
        "timeout": "",
        "input_schema": '{"type": "object", "properties": {"city": {"type": "string"}}}',
        "output_schema": "",
        "annotations": '{"readOnlyHint": true}',
        "integration_type": "mcp",
        "gateway": str(gateway.pk),
        "original_name": "",
        "backend_config": "{}",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ('{"type": "string"}', "root must be"),
        ('{"type": "object", "properties": {"x": {"type": "strng"}}}', "Not a valid JSON Schema (2020-12)"),
        ('{"type": "object",', "Enter valid JSON"),
        ('{"type": "object", "maximum": Infinity}', "finite numbers"),  # Python's json reads it; JSON has none
    ],
)
def test_adding_a_tool_with_an_invalid_schema_shows_the_error_on_the_field(client, catalog, schema, message):
    """The form comes back with the error on input_schema; nothing is stored and the version stays."""
    version = events.catalog_version()
    response = client.post("/admin/registry/tool/add/", tool_form(catalog["web"], input_schema=schema))
    assert response.status_code == 200
    errors = field_errors(response)
    assert list(errors) == ["input_schema"]
    assert message in errors["input_schema"][0]
    assert message in response.content.decode().replace("&#x27;", "'")
    assert not Tool.objects.filter(name="weather.get").exists()
    assert events.catalog_version() == version


def test_adding_a_valid_tool_stores_it_and_bumps_the_version(client, catalog):
    """A valid add form is saved (tags normalised) and the catalog version goes up."""
    version = events.catalog_version()
    response = client.post("/admin/registry/tool/add/", tool_form(catalog["web"]))
    assert response.status_code == 302
    tool = Tool.objects.get(name="weather.get")
    assert tool.gateway == catalog["web"]
    assert tool.tags == ["api", "weather"]
    assert tool.annotations == {"readOnlyHint": True}
    assert tool.output_schema is None
    assert events.catalog_version() == version + 1


def test_admin_applies_the_models_cross_field_rules(client, catalog):
    """A non-MCP tool with a gateway is refused on the gateway field, as in the API."""
    response = client.post("/admin/registry/tool/add/", tool_form(catalog["web"], integration_type="rest"))
    assert response.status_code == 200
    assert list(field_errors(response)) == ["gateway"]


def test_changing_a_tool_bumps_the_version(client, catalog):
    """Saving a change form bumps the catalog version once."""
    tool = Tool.objects.get(name="web.search")
    url = f"/admin/registry/tool/{tool.pk}/change/"
    version = events.catalog_version()
    response = client.post(url, {**form_values(client.get(url)), "description_override": "Search the web"})
    assert response.status_code == 302
    tool.refresh_from_db()
    assert tool.description_override == "Search the web"
    assert events.catalog_version() == version + 1


def test_json_fields_render_indented(client, catalog):
    """JSON fields are shown as indented JSON, non-ASCII text unescaped."""
    tool = ToolFactory(
        name="meteo",
        gateway=catalog["web"],
        input_schema={"type": "object", "properties": {"ville": {"type": "string"}}},
        annotations={"title": "Météo"},
    )
    html = client.get(f"/admin/registry/tool/{tool.pk}/change/").content.decode()
    assert (
        "{\n  &quot;type&quot;: &quot;object&quot;,\n  &quot;properties&quot;: {\n"
        "    &quot;ville&quot;: {\n      &quot;type&quot;: &quot;string&quot;\n    }\n  }\n}"
    ) in html
    assert "&quot;title&quot;: &quot;Météo&quot;" in html


def test_clearing_an_optional_json_box_stores_its_default(client, catalog):
    """An emptied optional JSON field (tags, annotations) saves as its default, not as an error or NULL."""
    tool = Tool.objects.get(name="web.search")
    url = f"/admin/registry/tool/{tool.pk}/change/"
    response = client.post(url, {**form_values(client.get(url)), "tags": "", "annotations": ""})
    assert response.status_code == 302
    tool.refresh_from_db()
    assert (tool.tags, tool.annotations) == ([], {})


def test_clearing_the_required_input_schema_is_an_error(client, catalog):
    """The input schema is required: an emptied box is an error on that field (of a local tool: a
    gateway's tool shows its upstream's schema read-only)."""
    function = {"function": "tests.fixtures.functions.add"}
    tool = ToolFactory(name="adder", integration_type="function", gateway=None, backend_config=function)
    url = f"/admin/registry/tool/{tool.pk}/change/"
    response = client.post(url, {**form_values(client.get(url)), "input_schema": ""})
    assert response.status_code == 200
    assert list(field_errors(response)) == ["input_schema"]


# ---------------------------------------------------------------------------------------------
# Bulk actions and deletes
# ---------------------------------------------------------------------------------------------


def test_bulk_disable_and_enable_change_the_selected_rows(client, catalog):
    """disable_selected and enable_selected change only the selected rows and bump the version."""
    search, rest, clock = (Tool.objects.get(name=n) for n in ("web.search", "rest.lookup", "clock.now"))
    version = events.catalog_version()

    response = client.post(
        "/admin/registry/tool/", {"action": "disable_selected", "_selected_action": [search.pk, rest.pk]}
    )
    assert response.status_code == 302
    assert dict(Tool.objects.values_list("name", "enabled")) == {
        "web.search": False,
        "rest.lookup": False,
        "clock.now": False,
    }
    assert events.catalog_version() == version + 1

    response = client.post(
        "/admin/registry/tool/", {"action": "enable_selected", "_selected_action": [clock.pk, search.pk]}, follow=True
    )
    assert "Enabled 2 tools." in response.content.decode()
    assert dict(Tool.objects.values_list("name", "enabled")) == {
        "web.search": True,
        "rest.lookup": False,
        "clock.now": True,
    }
    assert events.catalog_version() == version + 2


def test_bulk_action_that_changes_nothing_does_not_bump_the_version(client, catalog):
    """Enabling rows that are already enabled reports 0 and leaves the version alone."""
    search = Tool.objects.get(name="web.search")
    version = events.catalog_version()
    response = client.post(
        "/admin/registry/tool/", {"action": "enable_selected", "_selected_action": [search.pk]}, follow=True
    )
    assert "Enabled 0 tools." in response.content.decode()
    assert events.catalog_version() == version


@pytest.mark.parametrize("model", ["gateway", "resource", "prompt", "virtualserver", "resourcetemplate"])
def test_bulk_actions_exist_for_every_catalog_model(client, catalog, model):
    """Every catalog model offers enable_selected and disable_selected."""
    action_field = client.get(f"/admin/registry/{model}/").context["action_form"].fields["action"]
    assert {"enable_selected", "disable_selected"} <= {name for name, _label in action_field.choices}


def test_deleting_through_the_admin_bumps_the_version(client, catalog):
    """Deleting one entry, and deleting a selection, each bump the version."""
    version = events.catalog_version()
    prompt = Prompt.objects.get(name="summarise")
    response = client.post(f"/admin/registry/prompt/{prompt.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Prompt.objects.exists()
    assert events.catalog_version() == version + 1

    pks = list(Resource.objects.values_list("pk", flat=True))
    response = client.post(
        "/admin/registry/resource/", {"action": "delete_selected", "_selected_action": pks, "post": "yes"}
    )
    assert response.status_code == 302
    assert not Resource.objects.exists()
    assert events.catalog_version() == version + 2


# ---------------------------------------------------------------------------------------------
# Writes go through the services: one validation path, one catalog change per save
# ---------------------------------------------------------------------------------------------


def test_admin_writes_call_the_registry_services(client, catalog, monkeypatch):
    """Add, change, delete and bulk delete call entry_create, entry_update, entry_delete and entries_delete."""
    calls = []
    for name in ("entry_create", "entry_update", "entry_delete", "entries_delete"):
        real = getattr(services, name)
        spy = lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k)  # noqa: E731
        monkeypatch.setattr(services, name, spy)

    assert client.post("/admin/registry/tool/add/", tool_form(catalog["web"])).status_code == 302
    tool = Tool.objects.get(name="weather.get")
    url = f"/admin/registry/tool/{tool.pk}/change/"
    assert client.post(url, {**form_values(client.get(url)), "title": "Rain"}).status_code == 302
    assert client.post(f"/admin/registry/tool/{tool.pk}/delete/", {"post": "yes"}).status_code == 302
    pks = list(Prompt.objects.values_list("pk", flat=True))
    data = {"action": "delete_selected", "_selected_action": pks, "post": "yes"}
    assert client.post("/admin/registry/prompt/", data).status_code == 302
    assert calls == ["entry_create", "entry_update", "entry_delete", "entries_delete"]
    assert not Prompt.objects.exists()


def test_an_admin_save_is_one_catalog_change_announced_on_commit(client, catalog, django_capture_on_commit_callbacks):
    """Adding a virtual server with members bumps the version once and leaves one announcement for the commit."""
    page = client.get("/admin/registry/virtualserver/add/")
    tools = [str(pk) for pk in Tool.objects.values_list("pk", flat=True)]
    data = {**{k: v for k, v in form_values(page).items() if v != ""}, "name": "second", "tools": tools}
    version = events.catalog_version()
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post("/admin/registry/virtualserver/add/", data)
    assert response.status_code == 302, field_errors(response)
    server = VirtualServer.objects.get(name="second")
    assert server.tools.count() == len(tools)
    assert events.catalog_version() == version + 1
    assert [callback.__module__ for callback in callbacks].count("registry.events") == 1


def test_a_services_rule_rejects_admin_input_with_a_form_error(client, db):
    """Credentials are checked by the service, not the form: a bad header name comes back as a form
    error (not a server error), nothing is stored and the version stays."""
    data = {**form_values(client.get("/admin/registry/gateway/add/")), "name": "hdr", "url": "https://h/mcp"}
    data["auth_type"] = "headers"
    version = events.catalog_version()
    response = client.post("/admin/registry/gateway/add/", {**data, "headers": "Bad Name: v"})
    assert response.status_code == 200
    assert non_field_errors(response) == ["'Bad Name' is not a valid header name."]
    assert not Gateway.objects.filter(name="hdr").exists()
    assert events.catalog_version() == version


def test_an_error_the_service_raises_while_saving_is_shown_on_its_field(client, catalog, monkeypatch):
    """As when another writer takes the name between the form's checks and the save: the service's
    Conflict is shown on the name field, and what the failed save had written is rolled back."""
    real = services.entry_create

    def create_then_conflict(model, *, data):
        real(model, data=data)
        raise Conflict(f"A tool with name {data['name']!r} already exists.", errors={"name": ["Already taken."]})

    monkeypatch.setattr(services, "entry_create", create_then_conflict)
    version = events.catalog_version()
    response = client.post("/admin/registry/tool/add/", tool_form(catalog["web"]))
    assert response.status_code == 200
    assert field_errors(response) == {"name": ["Already taken."]}
    assert not Tool.objects.filter(name="weather.get").exists()
    assert events.catalog_version() == version


# ---------------------------------------------------------------------------------------------
# Resources
# ---------------------------------------------------------------------------------------------


def test_binary_resource_can_be_edited_and_keeps_its_content(client, db):
    """The blob is not on the form; saving a binary resource's other fields keeps the bytes."""
    resource = services.entry_create(Resource, data={"uri": "file:///logo.png", "name": "logo", "blob": b"\x00\x01"})
    url = f"/admin/registry/resource/{resource.pk}/change/"
    response = client.post(url, {**form_values(client.get(url)), "title": "Logo"})
    assert response.status_code == 302
    resource.refresh_from_db()
    assert (resource.title, resource.text, bytes(resource.blob)) == ("Logo", None, b"\x00\x01")


def test_upstream_resource_can_be_added_without_text(client, catalog):
    """An upstream resource (gateway chosen, text box empty) is stored with no text."""
    response = client.get("/admin/registry/resource/add/")
    data = {**form_values(response), "uri": "https://up/r", "name": "r", "gateway": str(catalog["web"].pk)}
    assert client.post("/admin/registry/resource/add/", data).status_code == 302
    resource = Resource.objects.get(uri="https://up/r")
    assert (resource.text, resource.gateway) == (None, catalog["web"])


def test_resource_with_text_and_a_gateway_is_refused(client, catalog):
    """Text and a gateway together are two sources: the form shows the error and stores nothing."""
    response = client.get("/admin/registry/resource/add/")
    data = {
        **form_values(response),
        "uri": "https://up/r",
        "name": "r",
        "text": "x",
        "gateway": str(catalog["web"].pk),
    }
    response = client.post("/admin/registry/resource/add/", data)
    assert response.status_code == 200
    assert non_field_errors(response) == [
        "A resource needs exactly one source: text content, binary content, or an upstream gateway."
    ]
    assert not Resource.objects.filter(uri="https://up/r").exists()


# ---------------------------------------------------------------------------------------------
# Gateways: write-only credentials
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def bearer_gateway(db):
    return services.entry_create(
        Gateway,
        data={"name": "secured", "url": "https://h/mcp", "auth_type": "bearer", "credentials": {"token": TOKEN}},
    )


def change_url(gateway: Gateway) -> str:
    return f"/admin/registry/gateway/{gateway.pk}/change/"


def test_gateway_change_form_never_renders_stored_secrets(client, bearer_gateway):
    """Neither the token nor its ciphertext appears in the change form; it says credentials are stored."""
    response = client.get(change_url(bearer_gateway))
    html = response.content.decode()
    assert TOKEN not in html
    assert bearer_gateway.credentials_encrypted not in html
    assert response.context["adminform"].form["token"].value() is None


def test_gateway_change_form_never_renders_basic_password_or_headers(client, db):
    """Basic passwords and custom header values are not shown either."""
    basic = services.entry_create(
        Gateway,
        data={
            "name": "basic",
            "url": "https://h/mcp",
            "auth_type": "basic",
            "credentials": {"username": "svc", "password": PASSWORD},
        },
    )
    headers = services.entry_create(
        Gateway,
        data={
            "name": "headers",
            "url": "https://h/mcp",
            "auth_type": "headers",
            "credentials": {"headers": {"X-Api-Key": "header-secret-31"}},
        },
    )
    assert PASSWORD not in client.get(change_url(basic)).content.decode()
    assert "header-secret-31" not in client.get(change_url(headers)).content.decode()


def test_blank_credential_fields_keep_the_stored_credentials(client, bearer_gateway):
    """Saving the form with empty credential fields changes other fields and keeps the token."""
    url = change_url(bearer_gateway)
    response = client.post(url, {**form_values(client.get(url)), "description": "edited"})
    assert response.status_code == 302
    gateway = Gateway.objects.get(pk=bearer_gateway.pk)
    assert gateway.description == "edited"
    assert gateway.get_credentials() == {"token": TOKEN}


def test_entering_a_new_token_replaces_the_stored_one(client, bearer_gateway):
    """A token typed into the form replaces the stored credentials, encrypted."""
    url = change_url(bearer_gateway)
    response = client.post(url, {**form_values(client.get(url)), "token": "fresh-token-1"})
    assert response.status_code == 302
    gateway = Gateway.objects.get(pk=bearer_gateway.pk)
    assert gateway.get_credentials() == {"token": "fresh-token-1"}
    assert "fresh-token-1" not in gateway.credentials_encrypted


def test_switching_to_basic_needs_username_and_password(client, bearer_gateway):
    """Changing the auth type without the new credentials is an error; with them they are stored."""
    url = change_url(bearer_gateway)
    data = {**form_values(client.get(url)), "auth_type": "basic"}
    response = client.post(url, data)
    assert response.status_code == 200
    assert non_field_errors(response) == ["HTTP Basic credentials need a non-empty 'username'."]
    assert Gateway.objects.get(pk=bearer_gateway.pk).get_credentials() == {"token": TOKEN}

    response = client.post(url, {**data, "username": "svc", "password": PASSWORD})
    assert response.status_code == 302
    gateway = Gateway.objects.get(pk=bearer_gateway.pk)
    assert gateway.auth_type == AuthType.BASIC
    assert gateway.get_credentials() == {"username": "svc", "password": PASSWORD}


def test_switching_to_none_clears_the_credentials(client, bearer_gateway):
    """auth_type none removes the stored credentials."""
    url = change_url(bearer_gateway)
    response = client.post(url, {**form_values(client.get(url)), "auth_type": "none"})
    assert response.status_code == 302
    gateway = Gateway.objects.get(pk=bearer_gateway.pk)
    assert gateway.credentials_encrypted == ""
    assert not gateway.has_credentials


def test_adding_a_gateway_with_custom_headers(client, db):
    """Header lines 'Name: value' are stored as encrypted header credentials; bad lines are an error."""
    data = {**form_values(client.get("/admin/registry/gateway/add/")), "name": "hdr", "url": "https://h/mcp"}
    data["auth_type"] = "headers"
    response = client.post("/admin/registry/gateway/add/", {**data, "headers": "no colon here"})
    assert response.status_code == 200
    assert list(field_errors(response)) == ["headers"]

    response = client.post("/admin/registry/gateway/add/", {**data, "headers": "X-Api-Key: k1\n\nX-Tenant: acme\n"})
    assert response.status_code == 302
    gateway = Gateway.objects.get(name="hdr")
    assert gateway.get_credentials() == {"headers": {"X-Api-Key": "k1", "X-Tenant": "acme"}}


def test_adding_a_stdio_gateway_with_an_invalid_url_shows_the_error(client, db):
    """The transport rules apply in the admin: a stdio gateway with a URL is refused on url."""
    data = {
        **form_values(client.get("/admin/registry/gateway/add/")),
        "name": "proc",
        "transport": "stdio",
        "command": "srv",
        "url": "http://h/mcp",
    }
    response = client.post("/admin/registry/gateway/add/", data)
    assert response.status_code == 200
    assert list(field_errors(response)) == ["url"]
    assert not Gateway.objects.filter(name="proc").exists()


def test_clearing_stdio_args_and_env_stores_empty_values(client, catalog):
    """Emptied args and env boxes of a stdio gateway save as [] and {}, not as a server error."""
    gateway = catalog["local"]
    url = change_url(gateway)
    response = client.post(url, {**form_values(client.get(url)), "args": "", "env": ""})
    assert response.status_code == 302
    gateway.refresh_from_db()
    assert (gateway.args, gateway.env) == ([], {})


def test_the_era_is_set_in_the_admin_and_the_detected_era_shown(client, bearer_gateway):
    """`era` is an editable setting next to the transport; what federation detected is shown read-only."""
    Gateway.objects.filter(pk=bearer_gateway.pk).update(detected_era="modern", protocol_version="2026-07-28")
    url = change_url(bearer_gateway)
    page = client.get(url)
    form = page.context["adminform"].form
    assert "era" in form.fields
    assert "detected_era" not in form.fields
    assert "2026-07-28 (stateless)" in page.content.decode()  # the detected era, read-only
    response = client.post(url, {**form_values(page), "era": "legacy"})
    assert response.status_code == 302
    assert Gateway.objects.get(pk=bearer_gateway.pk).era == "legacy"
    changelist = client.get("/admin/registry/gateway/", {"era": "legacy"})
    assert shown(changelist) == ["secured"]


def test_forcing_the_2026_era_on_a_websocket_gateway_is_refused_on_the_field(client, db):
    data = {
        **form_values(client.get("/admin/registry/gateway/add/")),
        "name": "ws",
        "transport": "websocket",
        "url": "wss://h/ws",
        "era": "modern",
    }
    response = client.post("/admin/registry/gateway/add/", data)
    assert response.status_code == 200
    assert list(field_errors(response)) == ["era"]
    assert not Gateway.objects.filter(name="ws").exists()
