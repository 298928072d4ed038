"""The dashboard's traffic panel: open sessions and streams, calls per minute and error rate per tool and per
gateway over the last hour, failing ones first and linked to their admin pages; rendered with the admin
index and refreshed by an HTMX fragment that only staff who may view tools get."""

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.test import Client

from tests.factories import GatewayFactory, ToolFactory, UserFactory
from transports import stats
from transports.protocol import observe


@pytest.fixture
def counts(db):
    observe.recorder.reset()
    cache.delete(stats.INDEX_KEY)
    yield observe.recorder
    observe.recorder.reset()


@pytest.fixture
def traffic(counts):
    """weather (of gateway wx) failed once in three calls; calm (local) answered twice."""
    wx = GatewayFactory(name="wx")
    weather = ToolFactory(name="weather", gateway=wx)
    calm = ToolFactory(name="calm", gateway=None, integration_type="rest")
    now = counts.clock()
    for failed in (False, True, False):
        counts.record("weather", "wx", failed, now - 0.2)
    for _ in range(2):
        counts.record("calm", observe.LOCAL, False, now - 0.01)
    return {"gateway": wx, "weather": weather, "calm": calm}


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_fragment_shows_rates_errors_and_links_failing_first(traffic, admin_user, django_assert_max_num_queries):
    client = logged_in(admin_user)
    with django_assert_max_num_queries(4):  # session, user, the tools' and the gateways' ids for the links
        response = client.get("/admin/dashboard/traffic/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    text = " ".join(response.content.decode().split())
    assert text.startswith('<div id="traffic">')
    weather_url = f"/admin/registry/tool/{traffic['weather'].pk}/change/"
    gateway_url = f"/admin/registry/gateway/{traffic['gateway'].pk}/change/"
    assert f'<a href="{weather_url}">weather</a>' in text
    assert f'<a href="{gateway_url}">wx</a>' in text
    assert f'href="/admin/registry/tool/?gateway__id__exact={traffic["gateway"].pk}"' in text
    assert "33.3% (1/3)" in text  # weather's error rate, in both windows
    assert "0% (0/2)" in text  # calm's
    assert "local tools (REST, CLI, function)" in text
    tools = text[text.index('id="traffic-tools"') :]
    assert tools.index(">weather<") < tools.index(">calm<")  # failing first
    assert "failing:" in tools[: tools.index(">weather<")]
    assert "<strong>1</strong> tool failing in the last 5 minutes" in text
    assert "since this gateway started" in text  # the process has run for less than an hour
    assert "1 gateway process reporting" in text


def test_without_traffic_the_panel_says_so(counts, admin_user):
    text = " ".join(logged_in(admin_user).get("/admin/dashboard/traffic/").content.decode().split())
    assert "No tool calls yet since this gateway started" in text
    assert 'id="traffic-tools"' not in text
    assert "open stream" in text
    assert "stdio process" in text


def test_the_admin_index_shows_the_panel_and_refreshes_it(traffic, admin_user):
    page = logged_in(admin_user).get("/admin/").content.decode()
    assert "Traffic (last hour)" in page
    assert 'hx-get="/admin/dashboard/traffic/"' in page
    assert 'id="traffic-tools"' in page  # rendered with the page: no JavaScript needed


def test_only_staff_who_may_view_tools_get_the_panel(counts):
    assert Client().get("/admin/dashboard/traffic/").status_code == 302  # to the admin's login
    plain = UserFactory(username="plain")
    response = logged_in(plain).get("/admin/dashboard/traffic/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    staff = UserFactory(username="staff", is_staff=True)
    assert logged_in(staff).get("/admin/dashboard/traffic/").status_code == 403
    assert "Traffic (last hour)" not in logged_in(staff).get("/admin/").content.decode()
    staff.user_permissions.add(Permission.objects.get(codename="view_tool"))
    assert logged_in(staff).get("/admin/dashboard/traffic/").status_code == 200
    assert "Traffic (last hour)" in logged_in(staff).get("/admin/").content.decode()
