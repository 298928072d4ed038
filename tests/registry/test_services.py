"""The registry's public write services: the building blocks others compose (entry_validate,
entry_save), bulk deletes, each a single catalog change announced once on commit (what a gateway
provides is written by registry.catalog_sync: tests/registry/test_catalog_sync.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from registry import events, services
from registry.catalog_sync import catalog_name
from registry.choices import Health
from registry.exceptions import Conflict, InvalidInput
from registry.models import Gateway, Tool, VirtualServer
from tests.factories import GatewayFactory, ToolFactory

ROOT = Path(__file__).resolve().parents[2]


def announcements(callbacks) -> int:
    """How many catalog announcements wait for the commit among captured on_commit callbacks."""
    return sum(1 for callback in callbacks if callback.__module__ == "registry.events")


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


@pytest.mark.django_db
def test_a_failed_read_is_recorded_and_keeps_the_entries():
    """gateway_failure_record marks the gateway unhealthy with the reason; its entries stay."""
    gateway = GatewayFactory(name="fx")
    ToolFactory(name="echo", gateway=gateway)
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
