"""Every operating page and action of the admin is for staff only, and every form holds CSRF.

Anonymous users and signed-in users who are not staff are sent to the admin's login (or refused) on each
page; the gateway actions ("Check now", "Sync now") and the forms (test call, OpenAPI import, gateway
change, registration, token issue, catalog export and import) refuse a POST without a CSRF token, for staff too."""

import pytest
from django.test import Client

from tests.factories import GatewayFactory, ToolFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def entries():
    gateway = GatewayFactory(name="fx")
    tool = ToolFactory(name="echo", gateway=gateway)
    return {"gateway": gateway, "tool": tool}


def pages(entries) -> list[str]:
    gateway, tool = entries["gateway"], entries["tool"]
    return [
        "/admin/",
        "/admin/dashboard/gateways/",
        "/admin/dashboard/traffic/",
        "/admin/registry/gateway/",
        "/admin/registry/gateway/register/",
        f"/admin/registry/gateway/{gateway.pk}/change/",
        f"/admin/registry/tool/{tool.pk}/change/",
        f"/admin/registry/tool/{tool.pk}/test-call/",
        "/admin/registry/tool/import-openapi/",
        "/admin/registry/virtualserver/",
        "/admin/federation/peer/",
        "/admin/registry/issuedtoken/",
        "/admin/registry/issuedtoken/add/",
        "/admin/catalog/export/",
        "/admin/catalog/import/",
        "/admin/registry/virtualserver/compose/",
    ]


def refused(response) -> bool:
    """Sent to the admin's login, or refused outright."""
    return response.status_code in (401, 403) or (
        response.status_code == 302 and response["Location"].startswith("/admin/login/")
    )


def test_anonymous_and_non_staff_users_reach_no_operating_page(entries):
    plain = Client()
    plain.force_login(UserFactory(username="plain", is_staff=False))
    for client in (Client(), plain):
        for url in pages(entries):
            assert refused(client.get(url)), url
        gateway = entries["gateway"]
        for action in ("check_now", "sync_now"):
            response = client.post(
                "/admin/registry/gateway/", {"action": action, "_selected_action": [str(gateway.pk)]}
            )
            assert refused(response), action
        for operation in ("check-now", "sync-now"):
            url = f"/admin/registry/gateway/{gateway.pk}/{operation}/"
            assert refused(client.post(url)), url


def test_staff_forms_and_actions_refuse_a_post_without_csrf(entries, admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    gateway, tool = entries["gateway"], entries["tool"]
    posts = [
        ("/admin/registry/gateway/", {"action": "check_now", "_selected_action": [str(gateway.pk)]}),
        ("/admin/registry/gateway/", {"action": "sync_now", "_selected_action": [str(gateway.pk)]}),
        (f"/admin/registry/gateway/{gateway.pk}/change/", {"name": "renamed"}),
        (f"/admin/registry/tool/{tool.pk}/test-call/", {"arguments": "{}"}),
        ("/admin/registry/tool/import-openapi/", {"source": "https://example.com/openapi.json"}),
        ("/admin/federation/peer/add/", {"url": "https://peer.example.com"}),
        (f"/admin/registry/gateway/{gateway.pk}/check-now/", {}),
        (f"/admin/registry/gateway/{gateway.pk}/sync-now/", {}),
        ("/admin/registry/gateway/register/", {"name": "x", "test": "Test connection"}),
        ("/admin/registry/issuedtoken/add/", {"user": str(admin_user.pk), "scopes": ["read"]}),
        ("/admin/catalog/export/", {}),
        ("/admin/catalog/import/", {"text": "{}"}),
        ("/admin/registry/virtualserver/compose/", {"name": "new", "action": "save"}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    for url in pages(entries):
        assert client.get(url).status_code == 200, url
