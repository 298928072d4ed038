"""The dashboard on the admin index: every gateway with its health, era, last sync and last error, failing
ones first, rendered with the page and refreshed by an HTMX fragment that only staff who may view
gateways get."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from registry.choices import Health
from tests.factories import GatewayFactory, UserFactory


@pytest.fixture
def gateways(db):
    GatewayFactory(name="alpha", health=Health.HEALTHY)
    GatewayFactory(name="zulu", health=Health.UNREACHABLE, last_error="connection refused by 127.0.0.1:9")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_admin_index_shows_every_gateway_failing_first(gateways, admin_user):
    page = logged_in(admin_user).get("/admin/").content.decode()
    assert 'id="gateway-health"' in page
    assert page.index(">zulu<") < page.index(">alpha<")
    assert "connection refused by 127.0.0.1:9" in page
    assert 'hx-get="/admin/dashboard/gateways/"' in page
    assert "1 healthy, 1 unreachable" in " ".join(page.split())


def test_the_fragment_is_the_panel_alone(gateways, admin_user, django_assert_max_num_queries):
    client = logged_in(admin_user)
    with django_assert_max_num_queries(4):  # session, user, gateways
        response = client.get("/admin/dashboard/gateways/", headers={"HX-Request": "true"})
    text = response.content.decode()
    assert response.status_code == 200
    assert text.lstrip().startswith('<table id="gateway-health">')
    assert "Unreachable" in text


def test_only_staff_who_may_view_gateways_get_the_panel(gateways):
    assert Client().get("/admin/dashboard/gateways/").status_code == 302  # to the admin's login
    plain = UserFactory(username="plain")
    assert logged_in(plain).get("/admin/dashboard/gateways/").status_code == 302
    staff = UserFactory(username="staff", is_staff=True)
    assert logged_in(staff).get("/admin/dashboard/gateways/").status_code == 403
    assert 'id="gateway-health"' not in logged_in(staff).get("/admin/").content.decode()
    staff.user_permissions.add(Permission.objects.get(codename="view_gateway"))
    assert logged_in(staff).get("/admin/dashboard/gateways/").status_code == 200
