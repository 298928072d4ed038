"""Registering and refreshing upstreams (federation.services), with the upstream's answers faked at
the one seam that talks to it (read_upstream); the real upstream path is covered end to end in
tests/transports/test_through_gateway.py and test_everything.py."""

from __future__ import annotations

import pytest

from federation import services
from federation.services import UpstreamCatalog
from registry.choices import Health
from registry.exceptions import InvalidInput
from registry.models import Gateway, Prompt, Resource, Tool
from tests.factories import GatewayFactory, ToolFactory

INIT = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "up", "version": "9"}}


def tool(name: str, **extra) -> dict:
    return {"name": name, "inputSchema": {"type": "object", "properties": {}}, **extra}


@pytest.fixture
def upstream(monkeypatch):
    """What the fake upstream reports; tests change it between refreshes."""
    state = UpstreamCatalog(initialize=INIT, tools=[tool("echo"), tool("sum", description="adds")])
    monkeypatch.setattr(services, "read_upstream", lambda gateway, timeout=30.0, pool=None: state)
    return state


@pytest.mark.django_db
def test_gateway_add_stores_the_gateway_and_its_catalog(upstream):
    upstream.resources = [{"uri": "test://a", "name": "a", "mimeType": "text/plain"}]
    upstream.prompts = [{"name": "greet", "arguments": [{"name": "who", "required": True}]}]
    gateway, report = services.gateway_add(data={"name": "fx", "url": "http://127.0.0.1:9/mcp"})
    assert gateway.health == Health.HEALTHY
    assert gateway.server_info == {"name": "up", "version": "9"}
    assert gateway.protocol_version == "2025-11-25"
    assert sorted(Tool.objects.filter(gateway=gateway).values_list("name", flat=True)) == ["echo", "sum"]
    assert Resource.objects.get(uri="test://a").gateway == gateway
    assert Prompt.objects.get(name="greet").arguments == [{"name": "who", "required": True}]
    assert report.summary() == "4 added, 0 updated, 0 removed"


@pytest.mark.django_db
def test_a_taken_name_gets_the_gateway_prefix_and_keeps_the_upstream_name(upstream):
    ToolFactory(name="echo", gateway=GatewayFactory(name="other"))
    gateway, report = services.gateway_add(data={"name": "fx", "url": "http://127.0.0.1:9/mcp"})
    renamed = Tool.objects.get(gateway=gateway, original_name="echo")
    assert renamed.name == "fx_echo"
    assert renamed.upstream_name == "echo"
    assert report.renamed == {"echo": "fx_echo"}


@pytest.mark.django_db
def test_refresh_adds_updates_and_removes(upstream, settings):
    """A changed definition of a known tool is held for review by default (GATEWAY_DRIFT_POLICY=hold);
    with accept it is updated at once."""
    gateway, _ = services.gateway_add(data={"name": "fx", "url": "http://127.0.0.1:9/mcp"})
    upstream.tools = [tool("echo", description="now described"), tool("new")]
    report = services.gateway_refresh(gateway=gateway)
    assert report.added == ["tool new"]
    assert (report.updated, report.held) == ([], ["tool echo"])
    assert report.removed == ["tool sum"]
    assert Tool.objects.get(name="echo").description == ""
    settings.GATEWAY_DRIFT_POLICY = "accept"
    upstream.tools = [tool("echo", description="described again"), tool("new")]
    report = services.gateway_refresh(gateway=gateway)
    assert report.updated == ["tool echo"]
    assert Tool.objects.get(name="echo").description == "described again"


@pytest.mark.django_db
def test_entries_the_catalog_cannot_take_are_skipped_and_reported(upstream):
    upstream.tools = [
        tool("good"),
        tool("has spaces"),
        tool("bad_schema", inputSchema={"type": "object", "properties": 5}),
    ]
    gateway, report = services.gateway_add(data={"name": "fx", "url": "http://127.0.0.1:9/mcp"})
    assert list(Tool.objects.filter(gateway=gateway).values_list("name", flat=True)) == ["good"]
    assert len(report.skipped) == 2
    assert "has spaces" in report.skipped[0]
    assert "input_schema" in report.skipped[1]


@pytest.mark.django_db
def test_an_unreachable_upstream_stores_nothing(monkeypatch):
    def fail(gateway, timeout=30.0, pool=None):
        raise InvalidInput("Cannot reach upstream 'fx': connection refused")

    monkeypatch.setattr(services, "read_upstream", fail)
    with pytest.raises(InvalidInput, match="Cannot reach"):
        services.gateway_add(data={"name": "fx", "url": "http://127.0.0.1:9/mcp"})
    assert not Gateway.objects.exists()


@pytest.mark.django_db
def test_invalid_settings_are_refused_before_connecting(upstream, monkeypatch):
    monkeypatch.setattr(services, "read_upstream", lambda *a, **k: pytest.fail("must not connect"))
    with pytest.raises(InvalidInput, match="url"):
        services.gateway_add(data={"name": "fx", "transport": "websocket", "url": "http://127.0.0.1:9/mcp"})


@pytest.mark.django_db
def test_a_failed_refresh_marks_the_gateway_unhealthy(upstream, monkeypatch):
    gateway, _ = services.gateway_add(data={"name": "fx", "url": "http://127.0.0.1:9/mcp"})

    def fail(gateway, timeout=30.0, pool=None):
        raise InvalidInput("Upstream 'fx' did not answer within 30 s.")

    monkeypatch.setattr(services, "read_upstream", fail)
    with pytest.raises(InvalidInput):
        services.gateway_refresh(gateway=gateway)
    gateway.refresh_from_db()
    assert gateway.health == Health.DEGRADED
    assert "did not answer" in gateway.last_error
    assert Tool.objects.filter(gateway=gateway).count() == 2  # the last good catalog stays


# ---- protocol eras ------------------------------------------------------------------------------------

DISCOVER = {
    "resultType": "complete",
    "supportedVersions": ["2026-07-28"],
    "capabilities": {"tools": {"listChanged": True}},
    "instructions": "modern one",
    "ttlMs": 0,
    "cacheScope": "private",
    "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern-up", "version": "3"}},
}


@pytest.mark.django_db
def test_a_modern_upstream_is_recorded_from_its_discover_result(upstream):
    """versioning: a 2026-07-28 upstream has no InitializeResult; its version, server info (the result's
    `_meta` serverInfo) and capabilities come from `server/discover`, and the era found is recorded."""
    upstream.initialize, upstream.era = DISCOVER, "modern"
    gateway, _ = services.gateway_add(data={"name": "fx", "url": "http://127.0.0.1:9/mcp"})
    assert gateway.era == "auto"
    assert gateway.detected_era == "modern"
    assert gateway.protocol_version == "2026-07-28"
    assert gateway.server_info == {"name": "modern-up", "version": "3"}
    assert gateway.capabilities == {"tools": {"listChanged": True}}
    upstream.initialize, upstream.era = INIT, "legacy"  # the upstream was replaced by a session-era one
    services.gateway_refresh(gateway=gateway)
    gateway.refresh_from_db()
    assert (gateway.detected_era, gateway.protocol_version) == ("legacy", "2025-11-25")
    assert gateway.server_info == {"name": "up", "version": "9"}


def fixture_stdio(era: str) -> dict:
    from tests.fixtures.servers import upstream_command

    argv = upstream_command("stdio", era=era)
    return {"transport": "stdio", "command": argv[0], "args": argv[1:]}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("server_era", "setting", "detected", "version"),
    [
        ("modern", "auto", "modern", "2026-07-28"),
        ("legacy", "auto", "legacy", "2025-11-25"),
        ("auto", "legacy", "legacy", "2025-11-25"),
    ],
)
def test_registering_a_real_upstream_detects_its_era(server_era, setting, detected, version):
    """End to end with the fixture upstream over stdio: the client probes `server/discover`, falls back to
    `initialize` for a session-era server, and the setting can force the session era."""
    gateway, report = services.gateway_add(data={"name": "fx", "era": setting, **fixture_stdio(server_era)})
    assert (gateway.era, gateway.detected_era, gateway.protocol_version) == (setting, detected, version)
    assert gateway.server_info["name"] == "gateway-upstream-fixture"
    assert "tools" in gateway.capabilities
    assert Tool.objects.filter(gateway=gateway, name="test_simple_text").exists()
    assert not report.skipped


@pytest.mark.django_db(transaction=True)
def test_forcing_the_2026_era_on_a_session_era_upstream_stores_nothing():
    with pytest.raises(InvalidInput, match="does not speak MCP 2026-07-28"):
        services.gateway_add(data={"name": "fx", "era": "modern", **fixture_stdio("legacy")})
    assert not Gateway.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_gateway_add_command_takes_the_era():
    from io import StringIO

    from django.core.management import call_command

    stdio = fixture_stdio("auto")
    out = StringIO()
    args = ["gateway_add", "fx", "--command", stdio["command"], *[f"--arg={arg}" for arg in stdio["args"]]]
    call_command(*args, "--era", "legacy", stdout=out)
    gateway = Gateway.objects.get(name="fx")
    assert (gateway.era, gateway.detected_era) == ("legacy", "legacy")
    assert "protocol 2025-11-25, session era)" in out.getvalue()
    call_command(
        "gateway_add", "fx2", "--command", stdio["command"], *[f"--arg={a}" for a in stdio["args"]], stdout=out
    )
    assert Gateway.objects.get(name="fx2").detected_era == "modern"  # auto: the dual-era fixture is spoken to modern
    assert "protocol 2026-07-28, stateless era)" in out.getvalue()


@pytest.mark.django_db
def test_the_catalog_snapshot_carries_the_era_to_the_upstream_client():
    """The pool builds its clients from `catalog_rows()`: the gateway's era setting reaches UpstreamConfig
    (and a changed era makes a different config, so the pool rebuilds the client)."""
    from registry.selectors import catalog_rows
    from transports.protocol.upstream_pool import config_from_row

    GatewayFactory(name="fx", era="legacy")
    [row] = catalog_rows()["gateways"]
    assert row["era"] == "legacy"
    config = config_from_row(row, request_timeout=5.0)
    assert config.era == "legacy"
    assert config != config_from_row({**row, "era": "auto"}, request_timeout=5.0)
