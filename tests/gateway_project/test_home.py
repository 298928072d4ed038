"""The landing page at `/` (the admin's "View site"): the MCP endpoints for anyone; the virtual servers
(with what each serves) and the upstream gateways (with their health) for staff."""

import pytest
from django.test import Client

from registry.choices import Health
from tests.factories import GatewayFactory, ToolFactory, VirtualServerFactory


@pytest.mark.django_db
def test_anyone_sees_the_endpoints_and_the_links_but_not_the_catalog():
    GatewayFactory(name="secret-upstream")
    page = Client().get("/")
    assert page.status_code == 200
    text = page.content.decode()
    for url in ("http://testserver/mcp", "http://testserver/sse", "ws://testserver/ws", "http://testserver/rpc"):
        assert f"<code>{url}</code>" in text
    for link in ('href="/admin/"', 'href="/api/docs"', 'href="/health"'):
        assert link in text
    assert "secret-upstream" not in text


@pytest.mark.django_db
def test_staff_see_servers_with_what_they_serve_and_gateways_with_their_health(admin_user):
    up = GatewayFactory(name="up", health=Health.UNREACHABLE, last_error="connection refused by 127.0.0.1:9")
    ToolFactory(name="t1", gateway=up)
    ToolFactory(name="t2", gateway=up)
    server = VirtualServerFactory(name="demo")
    server.gateways.add(up)
    client = Client()
    client.force_login(admin_user)
    text = client.get("/").content.decode()
    assert "<code>http://testserver/servers/demo/mcp</code>" in text
    assert "<td>2</td>" in text  # both tools of its gateway
    assert 'class="unreachable">Unreachable' in text
    assert "connection refused by 127.0.0.1:9" in text


@pytest.mark.django_db
def test_the_admin_view_site_link_leads_to_the_landing_page(admin_user):
    client = Client()
    client.force_login(admin_user)
    assert '<a href="/">View site</a>' in client.get("/admin/").content.decode()
