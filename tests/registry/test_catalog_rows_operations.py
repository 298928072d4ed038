"""What the MCP snapshot's source (``catalog_rows``) serves as gateways change health and definitions
change: unreachable gateways' entries hidden by a setting (except in a redundancy group), a description
override served, held definitions withheld by the withhold policy. docs/federation.md."""

import pytest

from registry.choices import Health, IntegrationType
from registry.selectors import catalog_rows
from tests.factories import GatewayFactory, ToolFactory


def names() -> set[str]:
    return {row["name"] for row in catalog_rows()["tools"]}


@pytest.fixture
def catalog(db):
    up = GatewayFactory(name="up", health=Health.HEALTHY)
    down = GatewayFactory(name="down", health=Health.UNREACHABLE)
    grouped = GatewayFactory(name="grouped", health=Health.UNREACHABLE, redundancy_group="pair")
    ToolFactory(name="local", integration_type=IntegrationType.FUNCTION, gateway=None)
    ToolFactory(name="from_up", gateway=up)
    ToolFactory(name="from_down", gateway=down)
    ToolFactory(name="from_grouped", gateway=grouped)


def test_unreachable_gateways_stay_listed_by_default(catalog, settings):
    settings.GATEWAY_HIDE_UNREACHABLE = False
    assert names() == {"local", "from_up", "from_down", "from_grouped"}


def test_hide_unreachable_leaves_out_ungrouped_unreachable_gateways_only(catalog, settings):
    """Local tools and healthy gateways stay; a redundancy group's unreachable member stays for failover."""
    settings.GATEWAY_HIDE_UNREACHABLE = True
    assert names() == {"local", "from_up", "from_grouped"}


def test_the_description_override_is_served(db):
    ToolFactory(name="t", gateway=GatewayFactory(), description="upstream's", description_override="ours")
    (row,) = catalog_rows()["tools"]
    assert row["description"] == "ours"


@pytest.mark.parametrize(("policy", "listed"), [("hold", True), ("withhold", False), ("accept", True)])
def test_a_held_definition_is_withheld_only_by_the_withhold_policy(db, settings, policy, listed):
    settings.GATEWAY_DRIFT_POLICY = policy
    ToolFactory(name="t", gateway=GatewayFactory(), pending_definition={"description": "new"})
    assert ("t" in names()) is listed
