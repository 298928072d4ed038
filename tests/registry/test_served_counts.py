"""A virtual server's counts are what its MCP endpoint serves: its chosen entries plus every entry of its
gateways, each once, enabled ones of enabled gateways only."""

import pytest

from registry.choices import IntegrationType
from registry.selectors import server_list_with_counts, server_tools
from tests.factories import GatewayFactory, PromptFactory, ToolFactory, VirtualServerFactory


@pytest.mark.django_db
def test_counts_cover_chosen_entries_and_whole_gateways_once(django_assert_num_queries):
    up, off = GatewayFactory(name="up"), GatewayFactory(name="off", enabled=False)
    a, b = ToolFactory(name="a", gateway=up), ToolFactory(name="b", gateway=up)
    ToolFactory(name="hidden", gateway=up, enabled=False)
    local = ToolFactory(name="local", gateway=None, integration_type=IntegrationType.FUNCTION)
    dead = ToolFactory(name="dead", gateway=off)
    PromptFactory(name="p", gateway=up, template="")
    server = VirtualServerFactory(name="s")
    server.gateways.add(up)
    server.tools.add(a, local, dead)  # a also comes with its gateway: counted once; dead's gateway is off
    VirtualServerFactory(name="empty")
    with django_assert_num_queries(1):
        counts = {s.name: (s.tools_served, s.prompts_served, s.resources_served) for s in server_list_with_counts()}
    assert counts == {"s": (3, 1, 0), "empty": (0, 0, 0)}
    assert b.servers.count() == 0  # b is served through its gateway only


@pytest.mark.django_db
def test_server_tools_lists_what_the_counts_count():
    up = GatewayFactory(name="up")
    a = ToolFactory(name="a", gateway=up)
    ToolFactory(name="b", gateway=up)
    ToolFactory(name="off", gateway=up, enabled=False)
    local = ToolFactory(name="local", gateway=None, integration_type=IntegrationType.FUNCTION)
    server = VirtualServerFactory(name="s")
    server.gateways.add(up)
    server.tools.add(a, local)
    assert [tool.name for tool in server_tools(server)] == ["a", "b", "local"]
