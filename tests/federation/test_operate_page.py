"""The gateway page's "Check now" and "Sync now": they run at once (not queued) under the gateway's lease and
show their result, inline for HTMX and as a message after a plain post; a running job makes them say so;
only staff who may change gateways may use them, with a CSRF token."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from registry.models import Gateway, SyncRun, Tool
from tests.factories import UserFactory
from tests.fixtures.servers import free_port, start_upstream


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


def urls(gateway: Gateway) -> tuple[str, str]:
    return f"/admin/registry/gateway/{gateway.pk}/check-now/", f"/admin/registry/gateway/{gateway.pk}/sync-now/"


@pytest.mark.django_db(transaction=True)
def test_sync_now_reads_the_upstream_and_shows_what_changed_inline(client, upstream):
    gateway = Gateway.objects.create(name="fx", transport="streamable-http", url=upstream.url)
    check, sync = urls(gateway)
    page = client.get(f"/admin/registry/gateway/{gateway.pk}/change/").content.decode()
    assert check in page
    assert sync in page
    assert "Sync now" in page

    fragment = client.post(sync, headers={"HX-Request": "true"}).content.decode()
    assert "Synced &#x27;fx&#x27;" in fragment
    assert "tool test_simple_text" in fragment  # the run's added entries, listed
    assert Tool.objects.filter(gateway=gateway, name="test_simple_text").exists()
    assert SyncRun.objects.get(gateway=gateway).trigger == "manual"

    fragment = client.post(check, headers={"HX-Request": "true"}).content.decode()
    assert "fx: Healthy; it answered in" in fragment
    gateway.refresh_from_db()
    assert gateway.health == "healthy"
    assert gateway.lease_owner == ""


@pytest.mark.django_db(transaction=True)
def test_without_javascript_the_result_is_a_message_on_the_gateway_page(client):
    gateway = Gateway.objects.create(
        name="dead", transport="streamable-http", url=f"http://127.0.0.1:{free_port()}/mcp"
    )
    check, sync = urls(gateway)
    response = client.post(check, follow=True)
    assert response.redirect_chain[-1][0] == f"/admin/registry/gateway/{gateway.pk}/change/"
    assert "connection refused by 127.0.0.1" in response.content.decode()
    response = client.post(sync, follow=True)
    assert "Could not sync &#x27;dead&#x27;: connection refused by 127.0.0.1" in response.content.decode()


@pytest.mark.django_db
def test_a_running_job_is_said_and_nothing_runs_twice(client):
    gateway = Gateway.objects.create(name="busy", transport="streamable-http", url="http://127.0.0.1:9/mcp")
    Gateway.objects.filter(pk=gateway.pk).update(
        lease_owner="elsewhere", lease_until=timezone.now() + timezone.timedelta(minutes=5)
    )
    _, sync = urls(gateway)
    fragment = client.post(sync, headers={"HX-Request": "true"}).content.decode()
    assert "running right now" in fragment
    assert not SyncRun.objects.exists()


@pytest.mark.django_db
def test_only_staff_who_may_change_gateways_with_a_csrf_token(admin_user):
    gateway = Gateway.objects.create(name="g", transport="streamable-http", url="http://127.0.0.1:9/mcp")
    check, sync = urls(gateway)
    for url in (check, sync):
        assert Client().post(url).status_code == 302  # to the login page
        staff = Client()
        staff.force_login(UserFactory(username=f"staff-{url[-10:-1]}", is_staff=True))
        assert staff.post(url).status_code == 403
        csrf = Client(enforce_csrf_checks=True)
        csrf.force_login(admin_user)
        assert csrf.post(url).status_code == 403
    admin = Client()
    admin.force_login(admin_user)
    assert admin.get(check).status_code == 405  # POST only
    assert admin.post(f"/admin/registry/gateway/{gateway.pk + 100}/sync-now/").status_code == 404
    assert not SyncRun.objects.exists()
