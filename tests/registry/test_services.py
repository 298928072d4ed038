"""The registry's public write services: the building blocks others compose (entry_validate,
entry_save), bulk deletes, and replacing what a gateway provides (federation's sync), each a single
catalog change announced once on commit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from registry import events, services
from registry.choices import Health
from registry.exceptions import Conflict, InvalidInput
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, Tool, VirtualServer
from registry.services import catalog_name
from tests.factories import GatewayFactory, PromptFactory, ResourceFactory, ToolFactory, VirtualServerFactory

ROOT = Path(__file__).resolve().parents[2]
ABOUT = {
    "detected_era": "legacy",
    "protocol_version": "2025-11-25",
    "server_info": {"name": "up", "version": "1"},
    "capabilities": {"tools": {}},
}


def announcements(callbacks) -> int:
    """How many catalog announcements wait for the commit among captured on_commit callbacks."""
    return sum(1 for callback in callbacks if callback.__module__ == "registry.events")


def tool(name: str, **extra) -> dict:
    return {"name": name, "inputSchema": {"type": "object", "properties": {}}, **extra}


def replace(gateway: Gateway, *, tools=(), resources=(), templates=(), prompts=()) -> services.CatalogDiff:
    return services.gateway_catalog_replace(
        gateway=gateway,
        tools=list(tools),
        resources=list(resources),
        templates=list(templates),
        prompts=list(prompts),
        **ABOUT,
    )


# ---- building blocks ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_entry_validate_raises_entry_creates_errors_and_stores_nothing():
    """entry_validate applies entry_create's rules (fields, credentials, unique names) without a write."""
    GatewayFactory(name="taken")
    version = events.catalog_version()
    probe = services.entry_validate(Gateway, data={"name": "fresh", "url": "http://127.0.0.1:9/mcp"})
    assert probe.pk is None
    with pytest.raises(InvalidInput, match="url"):
        services.entry_validate(Gateway, data={"name": "ws", "transport": "websocket", "url": "http://h/mcp"})
    with pytest.raises(InvalidInput, match="token"):
        services.entry_validate(Gateway, data={"name": "b", "url": "http://h/mcp", "auth_type": "bearer"})
    with pytest.raises(Conflict):
        services.entry_validate(Gateway, data={"name": "taken", "url": "http://127.0.0.1:9/mcp"})
    assert list(Gateway.objects.values_list("name", flat=True)) == ["taken"]
    assert events.catalog_version() == version


@pytest.mark.django_db
def test_entry_save_stores_members_and_leaves_the_event_to_its_caller(django_capture_on_commit_callbacks):
    """entry_save validates and saves an entry with its members but bumps nothing: its caller announces."""
    ToolFactory(name="t1")
    version = events.catalog_version()
    with django_capture_on_commit_callbacks() as callbacks:
        server = services.entry_save(VirtualServer(), data={"name": "s", "tools": ["t1"]})
    assert list(server.tools.values_list("name", flat=True)) == ["t1"]
    assert events.catalog_version() == version
    assert announcements(callbacks) == 0


@pytest.mark.django_db
def test_entry_create_is_one_catalog_change(django_capture_on_commit_callbacks):
    """Creating an entry with members bumps the version once and announces once, on commit."""
    ToolFactory(name="t1")
    version = events.catalog_version()
    with django_capture_on_commit_callbacks() as callbacks:
        services.entry_create(VirtualServer, data={"name": "s", "tools": ["t1"]})
    assert events.catalog_version() == version + 1
    assert announcements(callbacks) == 1


@pytest.mark.django_db
def test_entries_delete_counts_the_entries_and_bumps_once():
    """Deleting a selection is one change (cascades not counted); deleting nothing changes nothing."""
    web = GatewayFactory(name="web")
    ToolFactory(gateway=web)
    GatewayFactory(name="other")
    version = events.catalog_version()
    assert services.entries_delete(Gateway.objects.all()) == 2
    assert not Tool.objects.exists()
    assert events.catalog_version() == version + 1
    assert services.entries_delete(Gateway.objects.all()) == 0
    assert events.catalog_version() == version + 1


# ---- gateway_catalog_replace --------------------------------------------------------------------


@pytest.mark.django_db
def test_replacing_a_catalog_adds_updates_and_removes_and_records_the_upstream(django_capture_on_commit_callbacks):
    """Entries are added, changed ones updated, vanished ones removed; the gateway is marked healthy
    with what the upstream said about itself; the whole replace is one catalog change."""
    gateway = GatewayFactory(name="fx", health=Health.UNREACHABLE, last_error="down")
    replace(gateway, tools=[tool("echo"), tool("sum")], resources=[{"uri": "test://a", "name": "a"}])
    version = events.catalog_version()
    with django_capture_on_commit_callbacks() as callbacks:
        diff = replace(
            gateway,
            tools=[tool("echo", description="now described"), tool("new")],
            templates=[{"uriTemplate": "test://{x}", "name": "x"}],
            prompts=[{"name": "greet", "arguments": [{"name": "who", "required": True}, {"bad": 1}]}],
        )
    assert (diff.added, diff.updated, diff.removed) == (
        ["tool new", "resource template test://{x}", "prompt greet"],
        ["tool echo"],
        ["tool sum", "resource test://a"],
    )
    assert diff.summary() == "3 added, 1 updated, 2 removed"
    assert Tool.objects.get(name="echo").description == "now described"
    assert ResourceTemplate.objects.get(uri_template="test://{x}").gateway == gateway
    assert Prompt.objects.get(name="greet").arguments == [{"name": "who", "required": True}]
    assert not Resource.objects.exists()
    gateway.refresh_from_db()
    assert (gateway.health, gateway.last_error, gateway.protocol_version) == (Health.HEALTHY, "", "2025-11-25")
    assert (gateway.server_info, gateway.capabilities) == ({"name": "up", "version": "1"}, {"tools": {}})
    assert gateway.last_seen_at is not None
    assert events.catalog_version() == version + 1
    assert announcements(callbacks) == 1


@pytest.mark.django_db
def test_replacing_keeps_local_choices():
    """An entry the upstream still has keeps what people chose locally: enabled, tags, timeout and
    virtual-server membership, even when the upstream changed its description."""
    gateway = GatewayFactory(name="fx")
    replace(gateway, tools=[tool("echo")])
    echo = Tool.objects.get(name="echo")
    services.entry_update(echo, data={"enabled": False, "tags": ["mine"], "timeout": 5.0})
    server = VirtualServerFactory(name="main")
    server.tools.add(echo)

    diff = replace(gateway, tools=[tool("echo", description="changed upstream")])
    assert diff.updated == ["tool echo"]
    echo.refresh_from_db()
    assert (echo.enabled, echo.tags, echo.timeout, echo.description) == (False, ["mine"], 5.0, "changed upstream")
    assert list(server.tools.all()) == [echo]


@pytest.mark.django_db
def test_replacing_with_the_same_lists_changes_no_entry():
    """A second replace with identical lists updates nothing (the version still records the read)."""
    gateway = GatewayFactory(name="fx")
    replace(gateway, tools=[tool("echo")], prompts=[{"name": "p"}])
    diff = replace(gateway, tools=[tool("echo")], prompts=[{"name": "p"}])
    assert (diff.added, diff.updated, diff.removed, diff.skipped) == ([], [], [], [])


@pytest.mark.django_db
def test_names_other_sources_hold_get_the_gateway_prefix():
    """A tool or prompt name another source holds becomes '<gateway>_<name>', the upstream name kept."""
    ToolFactory(name="echo", gateway=GatewayFactory(name="other"))
    PromptFactory(name="greet")
    gateway = GatewayFactory(name="fx")
    diff = replace(gateway, tools=[tool("echo")], prompts=[{"name": "greet"}])
    assert diff.renamed == {"echo": "fx_echo", "greet": "fx_greet"}
    assert Tool.objects.get(gateway=gateway).upstream_name == "echo"
    assert Prompt.objects.get(gateway=gateway).original_name == "greet"


@pytest.mark.django_db
def test_entries_the_catalog_cannot_take_are_skipped_and_the_rest_stored():
    """A bad name, a bad schema or a URI another source holds is skipped with the reason; not fatal."""
    ResourceFactory(uri="test://local")
    gateway = GatewayFactory(name="fx")
    diff = replace(
        gateway,
        tools=[tool("good"), tool("has spaces"), tool("bad_schema", inputSchema={"type": "object", "properties": 5})],
        resources=[{"uri": "test://local", "name": "clash"}, {"uri": "test://mine", "name": "mine"}],
    )
    assert list(Tool.objects.filter(gateway=gateway).values_list("name", flat=True)) == ["good"]
    assert list(Resource.objects.filter(gateway=gateway).values_list("uri", flat=True)) == ["test://mine"]
    assert len(diff.skipped) == 3
    assert "has spaces" in diff.skipped[0]
    assert "input_schema" in diff.skipped[1]
    assert "another source already has it" in diff.skipped[2]


@pytest.mark.django_db
def test_a_failed_read_is_recorded_and_keeps_the_entries():
    """gateway_failure_record marks the gateway unhealthy with the reason; its entries stay."""
    gateway = GatewayFactory(name="fx")
    replace(gateway, tools=[tool("echo")])
    version = events.catalog_version()
    services.gateway_failure_record(gateway=gateway, error="x" * 3000)
    gateway.refresh_from_db()
    assert (gateway.health, len(gateway.last_error)) == (Health.DEGRADED, 2000)
    assert Tool.objects.filter(gateway=gateway).count() == 1
    assert events.catalog_version() == version + 1  # healthy -> degraded: the snapshot serves health


def test_prefixed_names_stay_within_64_characters_and_unique():
    long = "x" * 80
    first = catalog_name("gateway-one", long, {long})
    second = catalog_name("gateway-two", long, {long})
    assert len(first) <= 64
    assert len(second) <= 64
    assert first != second
    assert catalog_name("g", "free", set()) == "free"


# ---- the seam itself ----------------------------------------------------------------------------


def _private_uses(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "registry.services":
            found += [alias.name for alias in node.names if alias.name.startswith("_")]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in {"services", "registry_services"}
        ):
            found.append(node.attr)
    return found


def test_no_module_reaches_into_the_registry_services_private_names():
    """Other modules use registry.services through its public names only (the apps' services share
    that name, so any `services._name` outside registry/services.py is a reach-in)."""
    offenders = {}
    for package in ("registry", "federation", "transports", "gateway_project", "tests"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "registry" / "services.py":
                continue
            uses = _private_uses(ast.parse(path.read_text(), str(path)))
            if uses:
                offenders[str(path.relative_to(ROOT))] = uses
    assert offenders == {}
