"""Prometheus /metrics (docs/governance.md, "Logs, metrics and traces"): counters and histograms of real
calls through the in-process endpoint, the gauges and upstream health, and who may read them."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client
from prometheus_client.parser import text_string_to_metric_families

from registry import auth
from registry.choices import Health
from tests.conftest import ApiClient, basic
from tests.factories import GatewayFactory, ToolFactory, UserFactory
from tests.transports.test_hot_path import INITIALIZE, EchoUpstream, asgi_post
from transports import edge, metrics, stats
from transports.protocol import observe
from transports.runtime import get_core, reset_core


def families(text: str) -> dict[str, list]:
    """Samples by family name (counters lose their _total in the family name)."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list, name: str, **labels: str) -> float | None:
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


@pytest.fixture
def world(db):
    reset_core()
    edge.credentials.clear()
    observe.recorder.reset()
    metrics.forget_health()
    user = UserFactory(username="scraper-staff", is_staff=True)
    gateway = GatewayFactory(name="echo")
    gateway.health = Health.HEALTHY
    gateway.save()
    ToolFactory(name="shout", gateway=gateway)
    upstream = EchoUpstream()
    get_core().upstreams.override("echo", upstream)
    yield auth.token_issue(username=user.username), user
    reset_core()
    observe.recorder.reset()


def _scrape(**headers: str) -> tuple[int, str]:
    response = Client(headers=headers).get("/metrics")
    return response.status_code, response.content.decode()


@pytest.mark.django_db(transaction=True)
async def test_calls_through_the_endpoint_appear_as_counters_and_histograms(world, settings):
    """Two tools/calls, a tools/list and an unknown method: mcpgw_requests_total by method and outcome,
    mcpgw_tool_calls_total and the tool latency histogram by tool, gateway and outcome (cumulative
    buckets ending in +Inf equal to the count), the gauges and the upstream's health."""
    token, _ = world
    settings.GATEWAY_METRICS_TOKEN = "scrape-secret"
    _, headers, _ = await asgi_post(INITIALIZE, token=token)
    session = headers["mcp-session-id"]
    for request_id in (2, 3):
        call = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": "shout", "arguments": {}},
        }
        _, _, answer = await asgi_post(call, token=token, session=session)
        assert answer["result"]["isError"] is False
    await asgi_post({"jsonrpc": "2.0", "id": 4, "method": "tools/list"}, token=token, session=session)
    await asgi_post({"jsonrpc": "2.0", "id": 5, "method": "no/such"}, token=token, session=session)

    status, text = await sync_to_async(_scrape)(Authorization="Bearer scrape-secret")
    assert status == 200, text
    found = families(text)
    requests = found["mcpgw_requests"]
    assert value(requests, "mcpgw_requests_total", method="tools/call", outcome="ok") == 2
    assert value(requests, "mcpgw_requests_total", method="tools/list", outcome="ok") == 1
    assert value(requests, "mcpgw_requests_total", method="no/such", outcome="error") == 1
    latency = found["mcpgw_request_duration_seconds"]
    assert value(latency, "mcpgw_request_duration_seconds_count", method="tools/call", outcome="ok") == 2
    tools = found["mcpgw_tool_calls"]
    assert value(tools, "mcpgw_tool_calls_total", tool="shout", gateway="echo", outcome="ok") == 2
    histogram = found["mcpgw_tool_call_duration_seconds"]
    buckets = [s for s in histogram if s.name.endswith("_bucket") and s.labels["tool"] == "shout"]
    assert [s.labels["le"] for s in buckets][-1] == "+Inf"
    assert next(s.labels["le"] for s in buckets) == "0.005"
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)  # cumulative
    assert buckets[-1].value == 2
    assert value(histogram, "mcpgw_tool_call_duration_seconds_count", tool="shout", gateway="echo") == 2
    assert value(histogram, "mcpgw_tool_call_duration_seconds_sum", tool="shout", gateway="echo") > 0
    if stats.gauges()["shared_store"]:  # PostgreSQL + Redis pass: sessions live in Redis, counted deployment-wide
        assert value(found["mcpgw_sessions"], "mcpgw_sessions") == 0
        assert value(found["mcpgw_shared_sessions"], "mcpgw_shared_sessions") >= 1
    else:
        assert value(found["mcpgw_sessions"], "mcpgw_sessions") == 1
    assert value(found["mcpgw_session_objects"], "mcpgw_session_objects") == 1
    assert value(found["mcpgw_streams"], "mcpgw_streams") is not None
    assert value(found["mcpgw_stdio_processes"], "mcpgw_stdio_processes") == 0
    health = found["mcpgw_upstream_health"]
    assert value(health, "mcpgw_upstream_health", gateway="echo", state="healthy") == 1
    assert value(health, "mcpgw_upstream_health", gateway="echo", state="unreachable") == 0
    assert "mcpgw_rate_limit_refusals" in found
    assert "# HELP mcpgw_tool_calls_total" in text


@pytest.mark.django_db(transaction=True)
async def test_asyncio_tasks_counts_the_unfinished_tasks_of_the_serving_loop(settings):
    """mcpgw_asyncio_tasks is read from the loop /metrics is served on: three waiting tasks count three
    more than after they finished."""
    settings.GATEWAY_METRICS_TOKEN = "t"
    metrics.forget_health()

    async def scrape() -> float | None:
        response = await AsyncClient().get("/metrics", headers={"Authorization": "Bearer t"})
        assert response.status_code == 200, response.content
        return value(families(response.content.decode())["mcpgw_asyncio_tasks"], "mcpgw_asyncio_tasks")

    release = asyncio.Event()
    waiting = [asyncio.create_task(release.wait()) for _ in range(3)]
    busy = await scrape()
    release.set()
    await asyncio.gather(*waiting)
    idle = await scrape()
    assert busy is not None
    assert idle is not None
    assert busy - idle == 3


def test_asyncio_tasks_is_absent_until_a_live_serving_loop_is_known(db, monkeypatch):
    """No gauge before a scrape has noted the loop, nor once that loop is closed (a number from a dead
    loop would read as a flat line)."""
    monkeypatch.setattr(metrics, "_serving_loop", None)
    assert metrics.asyncio_tasks() is None
    loop = asyncio.new_event_loop()
    metrics.note_serving_loop(loop)
    assert metrics.asyncio_tasks() == 0
    loop.close()
    assert metrics.asyncio_tasks() is None
    assert "mcpgw_asyncio_tasks" not in metrics.exposition().decode()


def test_rate_limit_refusals_are_read_from_the_limiter(db, monkeypatch, settings):
    """transports.protocol.limits.refusals (when the limiter is there) becomes mcpgw_rate_limit_refusals_total."""
    monkeypatch.setattr(metrics, "rate_limit_refusals", lambda: {"GATEWAY_RATE_LIMIT_PER_USER": 3})
    settings.GATEWAY_METRICS_TOKEN = "t"
    _status, text = _scrape(Authorization="Bearer t")
    refusals = families(text)["mcpgw_rate_limit_refusals"]
    assert value(refusals, "mcpgw_rate_limit_refusals_total", limit="GATEWAY_RATE_LIMIT_PER_USER") == 3


def test_the_token_opens_metrics_and_a_wrong_or_missing_one_is_refused(db, settings):
    settings.GATEWAY_METRICS_TOKEN = "scrape-secret"
    assert _scrape(Authorization="Bearer scrape-secret")[0] == 200
    status, text = _scrape(Authorization="Bearer wrong")
    assert status == 403
    assert "GATEWAY_METRICS_TOKEN" in text
    status, text = _scrape()
    assert status == 401
    assert "GATEWAY_METRICS_TOKEN" in text


def test_the_allow_list_takes_addresses_and_networks(db, settings):
    """The test client comes from 127.0.0.1: a network holding it opens metrics, another does not."""
    settings.GATEWAY_METRICS_ALLOWED_IPS = ["10.0.0.0/8", "127.0.0.0/30"]
    assert _scrape()[0] == 200
    settings.GATEWAY_METRICS_ALLOWED_IPS = ["10.0.0.0/8", "not-an-address"]
    status, text = _scrape()
    assert status == 403
    assert "GATEWAY_METRICS_ALLOWED_IPS" in text


def test_the_token_or_the_allow_list_either_suffices(db, settings):
    settings.GATEWAY_METRICS_TOKEN = "scrape-secret"
    settings.GATEWAY_METRICS_ALLOWED_IPS = ["127.0.0.1"]
    assert _scrape()[0] == 200
    settings.GATEWAY_METRICS_ALLOWED_IPS = ["192.0.2.1"]
    assert _scrape()[0] == 401
    assert _scrape(Authorization="Bearer scrape-secret")[0] == 200


def test_without_token_or_list_staff_credentials_are_needed(staff_user, plain_user, staff_token, settings):
    """Basic or a JWT of a staff user, or an admin session; a non-staff user gets 403, nobody 401."""
    assert ApiClient(basic(staff_user.username)).get("/metrics").status_code == 200
    assert ApiClient(f"Bearer {staff_token}").get("/metrics").status_code == 200
    refused = ApiClient(basic(plain_user.username)).get("/metrics")
    assert refused.status_code == 403
    assert "staff" in refused.content.decode()
    assert ApiClient(basic(staff_user.username, "wrong password")).get("/metrics").status_code == 401
    assert Client().get("/metrics").status_code == 401
    browser = Client()
    browser.force_login(staff_user)
    assert browser.get("/metrics").status_code == 200
    browser.force_login(plain_user)
    assert browser.get("/metrics").status_code == 401


def test_metrics_off_is_404(staff_user, settings):
    settings.GATEWAY_METRICS = False
    assert ApiClient(basic(staff_user.username)).get("/metrics").status_code == 404


def test_the_recorder_histograms_bucket_by_latency():
    """record() and request() put each duration in the first bucket whose bound holds it."""
    clock = [100.0]
    recorder = observe.Recorder(clock=lambda: clock[0], epoch=0.0)
    recorder.record("t", "g", False, 100.0 - 0.004)
    recorder.record("t", "g", True, 100.0 - 0.3)
    recorder.record("t", "g", False, 100.0 - 120.0)
    recorder.request("tools/call", observe.CANCELLED, 100.0 - 0.008)
    found = recorder.metrics()
    by_outcome = {row[2]: row[3] for row in found["tools"]}
    assert by_outcome["ok"][0] == 1
    assert by_outcome["ok"][-1] == 1
    assert by_outcome["error"][observe.BUCKETS.index(0.5)] == 1
    assert found["requests"] == [["tools/call", "cancelled", [0, 1] + [0] * 12, pytest.approx(0.008)]]
