"""The virtual-server composer (registry.admin.composer): each filter narrows the candidates, a selection
survives filtering, the preview is the tools/list the MCP core serves for the server once saved, the save
goes through the catalog's services (one version bump), and bad input, missing rights or a missing CSRF
token are refused with a page, never a 500. The candidate list and the preview take a bounded number of
queries however large the catalog."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from registry import events, services
from registry.choices import Health
from registry.models import Gateway, Prompt, Resource, Tool, VirtualServer
from tests.factories import (
    GatewayFactory,
    PromptFactory,
    ResourceFactory,
    ResourceTemplateFactory,
    ToolFactory,
    UserFactory,
    VirtualServerFactory,
)
from transports.runtime import get_core, reset_core

NEW = "/admin/registry/virtualserver/compose/"


def compose_url(server: VirtualServer) -> str:
    return f"/admin/registry/virtualserver/{server.pk}/compose/"


@pytest.fixture
def client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


def rest_tool(name: str, **fields) -> Tool:
    """A local tool a backend serves (a REST call) made through the services, as the API makes it."""
    data = {"name": name, "integration_type": "rest", "backend_config": {"url": "https://api.example.com/x"}}
    return services.entry_create(Tool, data={**data, **fields})


@pytest.fixture
def catalog(db):
    """Gateways of each health (one disabled), tools with tags, local entries, and a server choosing one tool."""
    web = GatewayFactory(name="web", health=Health.HEALTHY, description="The web one")
    slow = GatewayFactory(name="slow", health=Health.DEGRADED)
    down = GatewayFactory(name="down", health=Health.UNREACHABLE)
    off = GatewayFactory(name="off", health=Health.UNKNOWN, enabled=False)
    tools = {
        "search": ToolFactory(name="web.search", gateway=web, tags=["search", "web"], description="Find pages"),
        "fetch": ToolFactory(name="web.fetch", gateway=web, tags=["web"], title="Fetch a page"),
        "think": ToolFactory(name="slow.think", gateway=slow, description="Ponders slowly"),
        "ping": ToolFactory(name="down.ping", gateway=down),
        "dark": ToolFactory(name="off.dark", gateway=off),
        "calc": rest_tool("calc", tags=["math"], description="Adds numbers"),
        "hidden": rest_tool("hidden", enabled=False),
    }
    ResourceFactory(uri="file:///readme.md", name="readme")
    ResourceTemplateFactory(uri_template="web://pages/{id}", name="pages", gateway=web)
    PromptFactory(name="summarise")
    PromptFactory(name="web_prompt", gateway=web, template="")
    server = VirtualServerFactory(name="main", title="Main")
    server.tools.add(tools["search"])
    return {"web": web, "slow": slow, "down": down, "off": off, "tools": tools, "server": server}


def candidates(response) -> list[str]:
    return [row.key for row in response.context["candidates"].rows]


def chosen(response) -> list[str]:
    return [row.key for row in response.context["chosen"]]


def served(response) -> list[str]:
    return [tool["name"] for tool in response.context["preview"]["tools"]]


# ---------------------------------------------------------------------------------------------
# Pages and links
# ---------------------------------------------------------------------------------------------


def test_the_composer_is_linked_from_the_server_list_and_each_server_page(client, catalog):
    """'Compose a server' on the list, 'Open in the composer' on a server's page; both pages answer 200."""
    server = catalog["server"]
    listing = client.get("/admin/registry/virtualserver/").content.decode()
    assert f'href="{NEW}">Compose a server</a>' in listing
    page = client.get(f"/admin/registry/virtualserver/{server.pk}/change/").content.decode()
    assert f'href="{compose_url(server)}">Open in the composer</a>' in page
    assert client.get(NEW).status_code == 200
    response = client.get(compose_url(server))
    assert response.status_code == 200
    assert chosen(response) == ["web.search"]
    html = response.content.decode()
    assert f'<input type="checkbox" name="tools" value="{catalog["tools"]["search"].pk}"' in html
    assert "hx-post=" in html
    assert "htmx" in html
    for label in ("Filter", "Preview", "Save"):
        assert f'<input type="submit" name="action" value="{label}"' in html


def test_a_server_that_is_gone_sends_to_a_new_composition(client, db):
    response = client.get("/admin/registry/virtualserver/999/compose/", follow=True)
    assert response.redirect_chain[-1][0] == NEW
    assert "There is no virtual server with id &#x27;999&#x27;" in response.content.decode()


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # text search: name, title, description (and a resource's URI)
        ({"q": "fetch a"}, ["web.fetch"]),
        ({"q": "ponders"}, ["slow.think"]),
        ({"q": "readme"}, ["file:///readme.md"]),
        ({"q": "web one"}, ["web"]),  # a gateway by its description
        # kind
        ({"kind": "prompt"}, ["summarise", "web_prompt"]),
        ({"kind": "template"}, ["web://pages/{id}"]),
        ({"kind": "resource"}, ["file:///readme.md"]),
        ({"kind": "gateway"}, ["down", "off", "slow", "web"]),
        ({"kind": "tool", "gateway": "local"}, ["calc", "hidden"]),
        # gateway: local entries, or those of one gateway (and the gateway itself)
        ({"gateway": "local"}, ["calc", "hidden", "file:///readme.md", "summarise"]),
        ({"gateway": "{slow}"}, ["slow.think", "slow"]),
        # tag (tools only)
        ({"tag": "web"}, ["web.fetch"]),  # web.search carries it too, but it is chosen: listed under Chosen
        ({"tag": "math"}, ["calc"]),
        # health of the gateway (a gateway: its own)
        ({"health": "unreachable"}, ["down.ping", "down"]),
        ({"health": "degraded", "kind": "tool"}, ["slow.think"]),
        ({"health": "unknown"}, ["off.dark", "off"]),
        ({"health": "local", "kind": "tool"}, ["calc", "hidden"]),
        # enabled only: not disabled entries, not entries of disabled gateways, not disabled gateways
        ({"enabled_only": "on", "kind": "tool"}, ["calc", "down.ping", "slow.think", "web.fetch"]),
        ({"enabled_only": "on", "kind": "gateway"}, ["down", "slow", "web"]),
    ],
)
def test_each_filter_narrows_the_candidates(client, catalog, query, expected):
    """The filters work from a link (GET) and from the posted form alike."""
    query = {key: value.format(slow=catalog["slow"].pk) for key, value in query.items()}
    server = catalog["server"]
    response = client.get(compose_url(server), query)
    assert response.status_code == 200
    assert candidates(response) == expected
    posted = client.post(compose_url(server), {**query, "name": "main", "tools": [catalog["tools"]["search"].pk]})
    assert candidates(posted) == expected


def test_an_unknown_filter_value_is_an_error_on_the_page_and_filters_nothing(client, catalog):
    response = client.get(NEW, {"kind": "bogus", "gateway": "999", "tag": "nope"})
    assert response.status_code == 200
    errors = response.context["filter_form"].errors
    assert set(errors) == {"kind", "gateway", "tag"}
    assert "web.search" in candidates(response)


# ---------------------------------------------------------------------------------------------
# The selection survives filtering
# ---------------------------------------------------------------------------------------------


def test_chosen_entries_stay_listed_and_ticked_whatever_the_filters(client, catalog):
    """Entries ticked, then filtered out of sight, are still listed under Chosen, ticked, and posted again."""
    tools, web = catalog["tools"], catalog["web"]
    data = {"name": "main", "tools": [tools["calc"].pk, tools["think"].pk], "gateways": [web.pk]}
    response = client.post(NEW, {**data, "q": "nothing matches this", "action": "filter"})
    assert candidates(response) == []
    assert chosen(response) == ["calc", "slow.think", "web"]
    html = response.content.decode()
    for kind, pk, field in (("tool", tools["calc"].pk, "tools"), ("gateway", web.pk, "gateways")):
        assert f'name="{field}" value="{pk}" id="pick-{kind}-{pk}" checked' in html
    # and the preview is that of the whole selection, not of what the filter shows
    assert served(response) == ["calc", "slow.think", "web.fetch", "web.search"]
    # a tool of a chosen gateway is served already, as its candidate says
    response = client.post(NEW, {**data, "kind": "tool", "gateway": str(web.pk)})
    assert candidates(response) == ["web.fetch", "web.search"]
    assert response.content.decode().count("served already: its whole gateway is chosen") == 2


def test_a_chosen_entry_is_listed_once(client, catalog):
    """A chosen entry is not offered again among the candidates (one checkbox per entry)."""
    search = catalog["tools"]["search"]
    response = client.post(NEW, {"name": "x", "tools": [search.pk], "kind": "tool"})
    assert "web.search" in chosen(response)
    assert "web.search" not in candidates(response)
    assert response.content.decode().count(f'id="pick-tool-{search.pk}"') == 1


def test_htmx_gets_the_lists_and_the_preview_only(client, catalog):
    """A changed filter or a ticked box (an htmx post) answers the lists and, out of band, the preview."""
    calc = catalog["tools"]["calc"]
    response = client.post(NEW, {"name": "x", "tools": [calc.pk], "kind": "tool"}, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    assert html.lstrip().startswith('<div id="composer-lists">')
    assert 'id="composer-preview"' in html
    assert 'hx-swap-oob="true"' in html
    assert '<code class="preview-name">calc</code>' in html


def test_the_page_without_javascript_keeps_everything_posted(client, catalog):
    """Filter and Preview post the whole form: the server's fields and the selection come back as posted."""
    calc = catalog["tools"]["calc"]
    data = {"name": "draft", "title": "A draft", "description": "Not saved", "tools": [calc.pk]}
    for action in ("filter", "preview"):
        response = client.post(NEW, {**data, "action": action, "kind": "prompt"})
        html = response.content.decode()
        assert 'value="draft"' in html
        assert 'value="A draft"' in html
        assert "Not saved</textarea>" in html
        assert chosen(response) == ["calc"]
        assert 'id="id_enabled" checked' not in html  # unticked stays unticked
    assert not VirtualServer.objects.filter(name="draft").exists()


# ---------------------------------------------------------------------------------------------
# The preview is what the gateway serves
# ---------------------------------------------------------------------------------------------


def as_wire(tool: dict) -> dict:
    """A preview row as tools/list puts it on the wire (empty fields left out, inputSchema always there)."""
    wire = {
        "name": tool["name"],
        "title": tool["title"],
        "description": tool["description"],
        "inputSchema": tool["input_schema"],
        "outputSchema": tool["output_schema"],
        "annotations": tool["annotations"],
    }
    return {k: v for k, v in wire.items() if v not in (None, "", {}, [])} | {"inputSchema": tool["input_schema"]}


def served_by_the_core(name: str):
    """The view of a virtual server the MCP core serves from (the snapshot built from the database)."""
    reset_core()
    try:
        return async_to_sync(get_core().view)(name)
    finally:
        reset_core()


@pytest.mark.parametrize(("hide_unreachable", "policy"), [(False, "hold"), (True, "withhold")])
def test_the_preview_is_the_tools_list_the_core_serves_once_saved(
    client, transactional_db, settings, hide_unreachable, policy
):
    """Chosen tools plus a whole gateway, with the description override served, a held definition change
    (served as stored under hold, left out under withhold), an unreachable gateway's tool (left out when
    GATEWAY_HIDE_UNREACHABLE), a disabled tool and a disabled gateway's tool (never served): the preview
    lists what the core's tools/list gives after saving, field for field, and counts the same resources,
    templates and prompts."""
    settings.GATEWAY_HIDE_UNREACHABLE = hide_unreachable
    settings.GATEWAY_DRIFT_POLICY = policy
    web = GatewayFactory(name="web", health=Health.HEALTHY)
    down = GatewayFactory(name="down", health=Health.UNREACHABLE)
    off = GatewayFactory(name="off", enabled=False)
    ToolFactory(name="web.a", gateway=web, title="A", description="upstream's", description_override="ours")
    ToolFactory(name="web.b", gateway=web, output_schema={"type": "object"}, annotations={"readOnlyHint": True})
    ToolFactory(name="web.held", gateway=web, description="old", pending_definition={"description": "new"})
    ToolFactory(name="web.off", gateway=web, enabled=False)
    picked = [
        ToolFactory(name="down.ping", gateway=down),
        ToolFactory(name="off.dark", gateway=off),
        rest_tool("calc", description="Adds"),
    ]
    rest_tool("unused")  # not chosen: not served
    ResourceTemplateFactory(uri_template="web://pages/{id}", gateway=web)
    readme = ResourceFactory(uri="file:///readme.md")
    ResourceFactory(uri="file:///other.md")
    PromptFactory(name="web_prompt", gateway=web, template="")
    data = {
        "name": "composed",
        "enabled": "on",
        "tools": [tool.pk for tool in picked],
        "gateways": [web.pk],
        "resources": [readme.pk],
    }

    preview = client.post(NEW, {**data, "action": "preview"}).context["preview"]
    expected = ["calc", "web.a", "web.b"] + (["down.ping"] if not hide_unreachable else [])
    expected += ["web.held"] if policy == "hold" else []
    assert sorted(tool["name"] for tool in preview["tools"]) == sorted(expected)
    assert client.post(NEW, {**data, "action": "save"}).status_code == 302

    view = served_by_the_core("composed")
    assert [as_wire(tool) for tool in preview["tools"]] == [tool.wire for tool in view.tools]
    assert preview["resources"] == [r.uri for r in view.resources] == ["file:///readme.md"]
    assert preview["resource_templates"] == [t.uri_template for t in view.templates]
    assert preview["prompts"] == [p.name for p in view.prompts] == ["web_prompt"]
    a = next(tool for tool in preview["tools"] if tool["name"] == "web.a")
    assert a["description"] == "ours"


def test_the_preview_says_when_the_server_is_disabled(client, catalog):
    response = client.post(NEW, {"name": "x", "action": "preview"})
    assert "The server is disabled: it is not served at all" in response.content.decode()


def test_the_client_configuration_names_the_server_and_this_gateway(client, catalog):
    """The same blocks as the server's page: Streamable HTTP URL and header, the stdio wrapper, the SDK."""
    html = client.post(NEW, {"name": "fresh", "action": "preview"}).content.decode()
    assert "URL: http://testserver/servers/fresh/mcp\nHeader: Authorization: Bearer &lt;token&gt;" in html
    assert "scripts/mcp-gateway-stdio" in html
    assert "streamable_http_client(&quot;http://testserver/servers/fresh/mcp&quot;" in html
    html = client.post(NEW, {"name": "Not A Name", "action": "preview"}).content.decode()
    assert "Give the server a valid name to see how clients connect to it." in html


# ---------------------------------------------------------------------------------------------
# Save: through the services
# ---------------------------------------------------------------------------------------------


def test_save_creates_the_server_through_the_service_with_one_catalog_change(
    client, catalog, monkeypatch, django_capture_on_commit_callbacks
):
    """A new server is stored by services.entry_create with its members by natural key; the catalog version
    goes up once and the change is announced on commit; the composer of the new server follows."""
    calls = []
    real = services.entry_create
    monkeypatch.setattr(services, "entry_create", lambda *a, **kw: calls.append(kw["data"]) or real(*a, **kw))
    tools, web = catalog["tools"], catalog["web"]
    version = events.catalog_version()
    data = {"name": "team", "title": "Team", "enabled": "on", "tools": [tools["calc"].pk], "gateways": [web.pk]}
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(NEW, {**data, "action": "save"})
    server = VirtualServer.objects.get(name="team")
    assert response.status_code == 302
    assert response["Location"] == compose_url(server)
    assert calls == [
        {
            "name": "team",
            "title": "Team",
            "description": "",
            "enabled": True,
            "tools": ["calc"],
            "resources": [],
            "resource_templates": [],
            "prompts": [],
            "gateways": ["web"],
        }
    ]
    assert events.catalog_version() == version + 1
    assert [callback.__module__ for callback in callbacks].count("registry.events") == 1
    assert [t.name for t in server.tools.all()] == ["calc"]
    assert [g.name for g in server.gateways.all()] == ["web"]
    assert "Saved the virtual server team" in client.get(response["Location"]).content.decode()


def test_save_changes_a_server_through_the_service(client, catalog, monkeypatch):
    server, tools = catalog["server"], catalog["tools"]
    calls = []
    real = services.entry_update
    monkeypatch.setattr(services, "entry_update", lambda *a, **kw: calls.append(a[0].pk) or real(*a, **kw))
    version = events.catalog_version()
    data = {"name": "main", "title": "Renamed", "tools": [tools["think"].pk, tools["fetch"].pk], "action": "save"}
    assert client.post(compose_url(server), data).status_code == 302
    server.refresh_from_db()
    assert calls == [server.pk]
    assert server.title == "Renamed"
    assert not server.enabled
    assert sorted(t.name for t in server.tools.all()) == ["slow.think", "web.fetch"]
    assert events.catalog_version() == version + 1


# ---------------------------------------------------------------------------------------------
# Bad input: errors on the form, never a 500
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Bad Name!", "is not a valid name"),
        ("", "This field cannot be blank."),
        ("main", "A virtual server with name 'main' already exists."),
    ],
)
def test_a_bad_or_taken_name_is_a_form_error_and_nothing_is_stored(client, catalog, name, message):
    version = events.catalog_version()
    count = VirtualServer.objects.count()
    response = client.post(NEW, {"name": name, "tools": [catalog["tools"]["calc"].pk], "action": "save"})
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors["name"])
    assert message in response.content.decode().replace("&#x27;", "'")
    assert VirtualServer.objects.count() == count
    assert events.catalog_version() == version
    assert chosen(response) == ["calc"]  # the selection is kept for the next try


def test_a_rename_refused_by_the_service_keeps_the_stored_server(client, catalog):
    server = catalog["server"]
    VirtualServerFactory(name="taken")
    response = client.post(compose_url(server), {"name": "taken", "action": "save"})
    assert response.status_code == 200
    assert response.context["title"] == "Compose main"
    server.refresh_from_db()
    assert server.name == "main"
    assert server.tools.count() == 1


def test_unknown_ids_are_form_errors_and_are_dropped(client, catalog):
    """Ids of entries that do not exist (deleted meanwhile) are named on the form; Save refuses them; the
    page comes back without them, so the next Save stores the rest."""
    calc = catalog["tools"]["calc"]
    data = {"name": "fresh", "tools": [calc.pk, 9999], "prompts": [8888], "action": "save"}
    response = client.post(NEW, data)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "No tool with id 9999" in errors["tools"][0]
    assert "No prompt with id 8888" in errors["prompts"][0]
    assert "No tool with id 9999 (deleted meanwhile?)" in response.content.decode()
    assert not VirtualServer.objects.filter(name="fresh").exists()
    assert chosen(response) == ["calc"]
    assert served(response) == ["calc"]


@pytest.mark.parametrize("junk", ["abc", "-3", "0", "1.5"])
def test_ids_that_are_not_ids_are_form_errors(client, catalog, junk):
    response = client.post(NEW, {"name": "fresh", "resources": [junk], "action": "save"})
    assert response.status_code == 200
    assert "is not the id of a catalog entry" in response.context["form"].errors["resources"][0]
    assert not VirtualServer.objects.filter(name="fresh").exists()


# ---------------------------------------------------------------------------------------------
# Who may compose; CSRF
# ---------------------------------------------------------------------------------------------


def test_a_non_staff_user_is_sent_to_the_login_page(catalog):
    client = Client()
    client.force_login(UserFactory(username="reader", is_staff=False))
    for url in (NEW, compose_url(catalog["server"])):
        for response in (client.get(url), client.post(url, {"name": "x", "action": "save"})):
            assert response.status_code == 302
            assert response["Location"].startswith("/admin/login/")
    assert not VirtualServer.objects.filter(name="x").exists()


def test_staff_need_the_change_or_add_permission(catalog):
    """Staff without rights get 403; changing a server takes change_virtualserver, a new one add_virtualserver."""
    user = UserFactory(username="staffer", is_staff=True)
    client = Client()
    client.force_login(user)
    server = catalog["server"]
    assert client.get(NEW).status_code == 403
    assert client.get(compose_url(server)).status_code == 403
    assert client.post(compose_url(server), {"name": "main", "action": "save"}).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="change_virtualserver"))
    client.force_login(user)
    assert client.get(compose_url(server)).status_code == 200
    assert client.get(NEW).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="add_virtualserver"))
    client.force_login(user)
    assert client.get(NEW).status_code == 200


def test_every_post_needs_the_csrf_token(admin_user, catalog):
    """A post without the token is 403 (the htmx ones too); with the page's token it goes through."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    data = {"name": "guarded", "action": "save"}
    assert client.post(NEW, data).status_code == 403
    assert client.post(NEW, {"name": "x"}, headers={"HX-Request": "true"}).status_code == 403
    assert not VirtualServer.objects.filter(name="guarded").exists()
    page = client.get(NEW)
    token = page.context["csrf_token"]
    assert 'name="csrfmiddlewaretoken"' in page.content.decode()
    assert client.post(NEW, {**data, "csrfmiddlewaretoken": str(token)}).status_code == 302
    assert VirtualServer.objects.filter(name="guarded").exists()


# ---------------------------------------------------------------------------------------------
# Bounded queries
# ---------------------------------------------------------------------------------------------


def grow(count: int, start: int = 0) -> None:
    """``count`` more tools, resources, templates and prompts over ``count`` more gateways."""
    for i in range(start, start + count):
        gateway = GatewayFactory(name=f"more-{i}", health=Health.HEALTHY)
        ToolFactory(name=f"more.tool_{i}", gateway=gateway, tags=["more"])
        rest_tool(f"more_local_{i}")
        ResourceFactory(uri=f"file:///more/{i}.txt")
        ResourceTemplateFactory(uri_template=f"more://{i}/{{x}}", gateway=gateway)
        PromptFactory(name=f"more_prompt_{i}", gateway=gateway, template="")


# session, user; gateways and tags (the filters); 5 kinds of candidates, 5 of chosen entries; 4 for the preview
QUERY_BUDGET = 18


def page_queries(client, selection: dict) -> tuple[int, int]:
    """The queries of an htmx post with the selection, and of the page of a new server."""
    with CaptureQueriesContext(connection) as posted:
        response = client.post(NEW, {"name": "big", **selection}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert len(response.context["chosen"]) == sum(map(len, selection.values()))
    with CaptureQueriesContext(connection) as shown:
        assert client.get(NEW).status_code == 200
    return len(posted), len(shown)


def everything() -> dict:
    return {
        field: list(model.objects.values_list("pk", flat=True))
        for field, model in (("tools", Tool), ("resources", Resource), ("prompts", Prompt), ("gateways", Gateway))
    }


def test_the_lists_and_the_preview_take_the_same_queries_at_any_size(client, catalog, django_assert_max_num_queries):
    """The candidates, the chosen entries and the preview are read in a fixed number of queries: a catalog
    and a selection thirty times larger take no more."""
    grow(2)
    small = page_queries(client, everything())
    grow(60, start=2)
    assert page_queries(client, everything()) == small
    selection = everything()
    with django_assert_max_num_queries(QUERY_BUDGET):
        response = client.post(NEW, {"name": "big", **selection}, headers={"HX-Request": "true"})
    assert len(response.context["preview"]["tools"]) > 120
    assert len(response.context["candidates"].rows) == 63  # the templates: none chosen


def test_a_kind_with_more_candidates_than_listed_says_so(client, catalog, monkeypatch):
    monkeypatch.setattr("registry.admin.composer.CANDIDATE_LIMIT", 3)
    response = client.get(NEW, {"kind": "tool"})
    assert len(candidates(response)) == 3
    assert response.context["candidates"].more == ["tool"]
    assert "More tool entries match than are listed: narrow the filters." in response.content.decode()
