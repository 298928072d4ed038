"""The admin's "Register with a connection test": testing shows what the upstream says it is and the tools it
would add, storing nothing; registering stores the gateway with its catalog; an upstream that cannot be
reached is a sentence on the page; only staff who may add gateways get the page."""

from __future__ import annotations

import pytest
from django.test import Client

from registry.models import Gateway, SyncRun, Tool
from tests.factories import UserFactory
from tests.fixtures.servers import free_port, start_upstream

URL = "/admin/registry/gateway/register/"


@pytest.fixture(scope="module")
def upstream():
    running = start_upstream("streamable-http")
    yield running
    running.stop()


@pytest.fixture
def client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.mark.django_db(transaction=True)
def test_testing_shows_the_upstream_and_stores_nothing_then_registering_stores_it(client, upstream):
    form = {"name": "fx", "transport": "streamable-http", "url": upstream.url, "era": "auto", "auth_type": "none"}
    page = client.post(URL, {**form, "test": "Test connection"}).content.decode()
    assert "The upstream answered" in page
    assert "gateway-upstream-fixture" in page
    assert "<code>test_simple_text</code>" in page
    assert not Gateway.objects.exists()

    response = client.post(URL, {**form, "register": "Register"})
    gateway = Gateway.objects.get(name="fx")
    assert response.status_code == 302
    assert response["Location"] == f"/admin/registry/gateway/{gateway.pk}/change/"
    assert Tool.objects.filter(gateway=gateway, name="test_simple_text").exists()
    assert SyncRun.objects.filter(gateway=gateway, ok=True).count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_upstream_is_a_sentence_and_nothing_is_stored(client):
    url = f"http://127.0.0.1:{free_port()}/mcp"
    form = {"name": "dead", "transport": "streamable-http", "url": url, "era": "auto", "auth_type": "none"}
    for button in ("test", "register"):
        page = client.post(URL, {**form, button: "x"}).content.decode()
        assert "connection refused by 127.0.0.1" in page, page[:3000]
    assert not Gateway.objects.exists()


@pytest.mark.django_db
def test_bad_settings_are_named_on_the_page(client):
    page = client.post(
        URL, {"name": "x", "transport": "streamable-http", "url": "", "era": "auto", "auth_type": "none", "test": "x"}
    )
    assert "needs a URL" in page.content.decode()


@pytest.mark.django_db
def test_only_staff_who_may_add_gateways_get_the_page(admin_user):
    assert Client().get(URL).status_code == 302
    staff = Client()
    staff.force_login(UserFactory(username="staff", is_staff=True))
    assert staff.get(URL).status_code == 403
    admin = Client()
    admin.force_login(admin_user)
    assert "Register with a connection test" in admin.get("/admin/registry/gateway/").content.decode()
    assert admin.get(URL).status_code == 200
    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(admin_user)
    assert csrf.post(URL, {"name": "x", "test": "x"}).status_code == 403
