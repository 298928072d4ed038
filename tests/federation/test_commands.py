"""The gateway_* commands, the check / sync / sync-runs endpoints and the Gateway admin's health columns,
sync-run inline and "Check now" / "Sync now" actions. The health and sync services are faked at their
seams (``federation.health.gateway_check``, ``federation.sync.gateway_sync``): these are entry points, thin
callers; the services have tests of their own."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from federation import health, sync
from registry.choices import ChangeStatus, Health, SyncTrigger
from registry.exceptions import InvalidInput
from registry.models import DefinitionChange, Gateway, SyncRun, Tool
from tests.factories import GatewayFactory, ToolFactory

pytestmark = pytest.mark.django_db


def command(*args, stdin: str | None = None, monkeypatch=None):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def synced(monkeypatch):
    """gateway_sync faked: gateways named "bad..." fail with a sentence, others add 2, hold 1."""
    calls: list[tuple[str, str, dict]] = []

    def fake(*, gateway, trigger="manual", pool=None, **kwargs):
        calls.append((gateway.name, trigger, kwargs))
        now = timezone.now()
        if gateway.name.startswith("bad"):
            SyncRun.objects.create(gateway=gateway, trigger=trigger, started_at=now, ok=False, error="refused")
            raise InvalidInput(f"connection refused by 127.0.0.1:9 ({gateway.name})")
        return SyncRun.objects.create(
            gateway=gateway,
            trigger=trigger,
            started_at=now,
            finished_at=now,
            ok=True,
            added=["tool a", "tool b"],
            held=["tool c"],
        )

    monkeypatch.setattr(sync, "gateway_sync", fake)
    return calls


@pytest.fixture
def checked(monkeypatch):
    """gateway_check faked: "bad..." gateways fail (degraded, counted), others turn healthy."""
    calls: list[str] = []

    def fake(*, gateway, timeout=None):
        calls.append(gateway.name)
        now = timezone.now()
        if gateway.name.startswith("bad"):
            Gateway.objects.filter(pk=gateway.pk).update(
                health=Health.DEGRADED,
                last_error="connection refused by 127.0.0.1:9",
                consecutive_failures=gateway.consecutive_failures + 1,
                last_checked_at=now,
            )
        else:
            Gateway.objects.filter(pk=gateway.pk).update(
                health=Health.HEALTHY, last_error="", consecutive_failures=0, last_checked_at=now
            )

    monkeypatch.setattr(health, "gateway_check", fake)
    return calls


# gateway_sync ------------------------------------------------------------------------------------------


def test_gateway_sync_syncs_every_enabled_gateway_and_prints_each_result(synced):
    GatewayFactory(name="alpha")
    GatewayFactory(name="beta")
    GatewayFactory(name="off", enabled=False)
    out, _ = command("gateway_sync")
    assert out.splitlines() == [
        "synced 'alpha': 2 added, 0 updated, 0 removed, 1 held",
        "synced 'beta': 2 added, 0 updated, 0 removed, 1 held",
    ]
    assert [(name, trigger) for name, trigger, _ in synced] == [("alpha", "manual"), ("beta", "manual")]


def test_gateway_sync_of_named_gateways_in_order_with_a_timeout(synced):
    GatewayFactory(name="alpha")
    GatewayFactory(name="off", enabled=False)  # named: synced even though disabled
    command("gateway_sync", "off", "alpha", "--timeout", "5")
    assert synced == [("off", SyncTrigger.MANUAL, {"timeout": 5.0}), ("alpha", SyncTrigger.MANUAL, {"timeout": 5.0})]


def test_gateway_sync_prints_the_failure_and_exits_1(synced):
    GatewayFactory(name="alpha")
    GatewayFactory(name="bad-one")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="1 of 2 syncs failed"):
        call_command("gateway_sync", stdout=out, stderr=err)
    assert "synced 'alpha'" in out.getvalue()
    assert "sync of 'bad-one' failed: connection refused by 127.0.0.1:9 (bad-one)" in err.getvalue()


def test_gateway_sync_names_unknown_gateways_and_runs_nothing(synced):
    GatewayFactory(name="alpha")
    with pytest.raises(CommandError, match=r"No gateway named 'nope', 'gone'\. See `manage.py gateway_list`\."):
        command("gateway_sync", "alpha", "nope", "gone")
    assert synced == []


def test_gateway_sync_with_nothing_to_sync_says_so(synced):
    assert command("gateway_sync")[0] == "No enabled gateways to sync.\n"


def test_gateway_refresh_still_works_through_the_sync(synced):
    GatewayFactory(name="alpha")
    assert command("gateway_refresh", "alpha")[0] == "Refreshed 'alpha': 2 added, 0 updated, 0 removed, 1 held.\n"
    GatewayFactory(name="bad-x")
    with pytest.raises(CommandError, match="connection refused"):
        command("gateway_refresh", "bad-x")
    with pytest.raises(CommandError, match="No gateway named 'zzz'"):
        command("gateway_refresh", "zzz")


# gateway_check -----------------------------------------------------------------------------------------


def test_gateway_check_prints_state_failures_time_and_error(checked):
    GatewayFactory(name="alpha")
    GatewayFactory(name="bad-one", consecutive_failures=2)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="1 of 2 checks failed"):
        call_command("gateway_check", stdout=out, stderr=err)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("alpha: healthy (consecutive failures: 0, last checked: 20")
    assert lines[1].startswith("bad-one: degraded (consecutive failures: 3, last checked: 20")
    assert lines[2] == "  last error: connection refused by 127.0.0.1:9"
    assert checked == ["alpha", "bad-one"]


def test_gateway_check_of_one_healthy_gateway_exits_0(checked):
    GatewayFactory(name="alpha")
    GatewayFactory(name="beta")
    out, _ = command("gateway_check", "beta")
    assert out.startswith("beta: healthy")
    assert checked == ["beta"]


def test_gateway_check_names_an_unknown_gateway(checked):
    with pytest.raises(CommandError, match="No gateway named 'nope'"):
        command("gateway_check", "nope")


# gateway_list, gateway_show ----------------------------------------------------------------------------


def test_gateway_list_is_a_table():
    web = GatewayFactory(name="web", redundancy_group="search", health=Health.HEALTHY, last_synced_at=timezone.now())
    ToolFactory(gateway=web)
    ToolFactory(gateway=web)
    GatewayFactory(name="local", transport="stdio", url="", command="mcp-time", enabled=False)
    lines = command("gateway_list")[0].splitlines()
    assert lines[0].split() == ["NAME", "TRANSPORT", "ENABLED", "HEALTH", "LAST", "SYNC", "TOOLS", "GROUP"]
    assert lines[1].split() == ["local", "stdio", "no", "unknown", "never", "0", "-"]
    cells = lines[2].split()
    assert cells[:4] == ["web", "streamable-http", "yes", "healthy"]
    assert cells[-2:] == ["2", "search"]
    assert len({line.index("HEALTH") if "HEALTH" in line else None for line in lines[:1]}) == 1
    assert lines[1].index("unknown") == lines[0].index("HEALTH")  # columns line up


def test_gateway_list_without_gateways_says_how_to_add_one():
    assert "gateway_add" in command("gateway_list")[0]


def test_gateway_show_prints_everything_but_secrets():
    gateway = GatewayFactory(
        name="web",
        sync_interval=60,
        redundancy_group="search",
        health=Health.DEGRADED,
        last_error="timed out after 10 s",
        consecutive_failures=1,
    )
    gateway.set_credentials("bearer", {"token": "s3cret-token"})
    gateway.save()
    tool = ToolFactory(gateway=gateway)
    now = timezone.now()
    for i in range(7):
        SyncRun.objects.create(
            gateway=gateway,
            trigger="schedule",
            started_at=now - timedelta(minutes=i),
            ok=i != 0,
            error="boom" * (i == 0),
        )
    DefinitionChange.objects.create(tool=tool, gateway=gateway, detected_at=now, status=ChangeStatus.PENDING)
    DefinitionChange.objects.create(tool=tool, gateway=gateway, detected_at=now, status=ChangeStatus.APPROVED)
    out = command("gateway_show", "web")[0]
    assert "s3cret-token" not in out
    assert "credentials stored: yes" in out
    assert "auth_type: bearer" in out
    assert "sync_interval: 60" in out
    assert "redundancy_group: search" in out
    assert "state: degraded" in out
    assert "last error: timed out after 10 s" in out
    assert "consecutive failures: 1" in out
    runs = out.split("Last sync runs\n")[1].split("Process\n")[0].splitlines()
    assert len(runs) == 5
    assert runs[0].endswith("failed: boom")
    assert runs[1].endswith("0 added, 0 updated, 0 removed, 0 held")
    assert "Pending definition changes: 1" in out


def test_gateway_show_of_a_stdio_gateway_shows_its_process():
    GatewayFactory(
        name="local",
        transport="stdio",
        url="",
        command="mcp-time",
        process_state={"state": "running", "pid": 4242, "restarts": 1},
    )
    out = command("gateway_show", "local")[0]
    assert "state: running" in out
    assert "pid: 4242" in out
    assert "Pending definition changes: 0" in out


def test_gateway_show_of_an_unknown_gateway():
    with pytest.raises(CommandError, match="No gateway named 'nope'"):
        command("gateway_show", "nope")


# gateway_remove ----------------------------------------------------------------------------------------


def test_gateway_remove_with_yes_deletes_the_gateway_and_its_entries():
    gateway = GatewayFactory(name="web")
    ToolFactory(gateway=gateway)
    out = command("gateway_remove", "web", "--yes")[0]
    assert out == "Removed 'web' and its 1 tools, 0 resources, 0 resource templates, 0 prompts.\n"
    assert not Gateway.objects.filter(name="web").exists()
    assert not Tool.objects.exists()


def test_gateway_remove_noinput_does_not_ask():
    GatewayFactory(name="web")
    command("gateway_remove", "web", "--noinput")
    assert not Gateway.objects.exists()


def test_gateway_remove_asks_and_keeps_the_gateway_unless_confirmed(monkeypatch):
    GatewayFactory(name="web")
    answers = iter(["no", "yes"])
    prompts = []
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or next(answers))
    with pytest.raises(CommandError, match="Nothing removed"):
        command("gateway_remove", "web")
    assert Gateway.objects.filter(name="web").exists()
    assert "Remove gateway 'web'" in prompts[0]
    command("gateway_remove", "web")
    assert not Gateway.objects.exists()


def test_gateway_remove_without_a_terminal_removes_nothing(monkeypatch):
    GatewayFactory(name="web")

    def closed(prompt):
        raise EOFError

    monkeypatch.setattr("builtins.input", closed)
    with pytest.raises(CommandError, match="Nothing removed"):
        command("gateway_remove", "web")
    assert Gateway.objects.exists()


def test_gateway_remove_of_an_unknown_gateway():
    with pytest.raises(CommandError, match="No gateway named 'nope'"):
        command("gateway_remove", "nope", "--yes")


# REST API ----------------------------------------------------------------------------------------------


def test_api_check_returns_the_health_after_the_check(staff_client, checked):
    good, bad = GatewayFactory(name="good"), GatewayFactory(name="bad-one")
    response = staff_client.post(f"/api/gateways/{good.pk}/check")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["ok"] is True
    assert body["health"] == "healthy"
    assert body["last_checked_at"]
    body = staff_client.post(f"/api/gateways/{bad.pk}/check").json()
    assert (body["ok"], body["health"], body["consecutive_failures"]) == (False, "degraded", 1)
    assert body["last_error"] == "connection refused by 127.0.0.1:9"


def test_api_sync_returns_the_run_and_a_failure_is_422_with_the_reason(staff_client, synced):
    good, bad = GatewayFactory(name="good"), GatewayFactory(name="bad-one")
    response = staff_client.post(f"/api/gateways/{good.pk}/sync")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["gateway"] == "good"
    assert body["ok"] is True
    assert body["trigger"] == "manual"
    assert (body["added"], body["held"]) == (["tool a", "tool b"], ["tool c"])
    response = staff_client.post(f"/api/gateways/{bad.pk}/sync")
    assert response.status_code == 422
    assert response.json()["detail"] == "connection refused by 127.0.0.1:9 (bad-one)"


def test_api_sync_runs_lists_the_newest_first(staff_client, reader_client):
    gateway = GatewayFactory(name="web")
    now = timezone.now()
    for i in range(5):
        SyncRun.objects.create(gateway=gateway, trigger="schedule", started_at=now - timedelta(minutes=i), ok=True)
    response = reader_client.get(f"/api/gateways/{gateway.pk}/sync-runs?limit=3")
    assert response.status_code == 200
    runs = response.json()
    assert len(runs) == 3
    assert runs[0]["started_at"] > runs[1]["started_at"] > runs[2]["started_at"]
    assert len(reader_client.get(f"/api/gateways/{gateway.pk}/sync-runs?limit=0").json()) == 1


def test_api_entry_points_answer_404_and_need_write_rights(staff_client, reader_client, checked, synced):
    for path in ("/api/gateways/98765/check", "/api/gateways/98765/sync"):
        response = staff_client.post(path)
        assert response.status_code == 404
        assert response.json()["detail"] == "No gateway with id 98765."
    assert staff_client.get("/api/gateways/98765/sync-runs").status_code == 404
    gateway = GatewayFactory()
    assert reader_client.post(f"/api/gateways/{gateway.pk}/check").status_code == 403
    assert reader_client.post(f"/api/gateways/{gateway.pk}/sync").status_code == 403
    assert checked == []
    assert synced == []


# Admin -------------------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


def test_admin_list_shows_health_badge_error_last_sync_and_group(admin_client):
    GatewayFactory(
        name="web", health=Health.UNREACHABLE, last_error="connection refused by 127.0.0.1:9", redundancy_group="search"
    )
    page = admin_client.get("/admin/registry/gateway/").content.decode()
    assert "Unreachable</span>" in page
    assert "#cf222e" in page
    assert "connection refused by 127.0.0.1:9" in page
    assert "search" in page
    assert "Check now" in page
    assert "Sync now" in page


def test_admin_change_page_shows_learned_fields_read_only_and_the_last_10_runs(admin_client):
    gateway = GatewayFactory(name="web", consecutive_failures=4, health=Health.DEGRADED)
    now = timezone.now()
    for i in range(12):
        SyncRun.objects.create(
            gateway=gateway, trigger="schedule", started_at=now - timedelta(minutes=i), ok=True, added=["tool x"] * i
        )
    response = admin_client.get(f"/admin/registry/gateway/{gateway.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="consecutive_failures"' not in page  # read-only
    assert 'name="sync_interval"' in page
    assert 'name="redundancy_group"' in page
    assert "Last 10 sync runs" in page
    assert "11 added" not in page  # the oldest two are not shown
    assert "9 added" in page


def test_admin_change_page_still_saves(admin_client):
    gateway = GatewayFactory(name="web")
    SyncRun.objects.create(gateway=gateway, trigger="schedule", started_at=timezone.now(), ok=True)
    page = admin_client.get(f"/admin/registry/gateway/{gateway.pk}/change/")
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and not isinstance(v, (list, dict))}
    data |= {"name": "web", "transport": "streamable-http", "era": "auto", "url": gateway.url, "auth_type": "none"}
    data |= {"args": "[]", "env": "{}", "sync_interval": "60", "redundancy_group": "grp", "priority": "5"}
    data |= {"verify_tls": "on", "enabled": "on"}
    # No data for the sync-run inline: it is read-only and takes no part in a save.
    response = admin_client.post(f"/admin/registry/gateway/{gateway.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    gateway.refresh_from_db()
    assert (gateway.sync_interval, gateway.redundancy_group, gateway.priority) == (60, "grp", 5)


def test_admin_actions_check_and_sync_now_run_the_services(admin_client, checked, synced):
    a, b = GatewayFactory(name="alpha"), GatewayFactory(name="beta")
    response = admin_client.post(
        "/admin/registry/gateway/", {"action": "check_now", "_selected_action": [a.pk, b.pk]}, follow=True
    )
    assert "Health check of 2 gateway(s) requested." in response.content.decode()
    assert sorted(checked) == ["alpha", "beta"]  # GATEWAY_SCHEDULER off: run at once
    response = admin_client.post(
        "/admin/registry/gateway/", {"action": "sync_now", "_selected_action": [a.pk]}, follow=True
    )
    assert "Sync of 1 gateway(s) requested." in response.content.decode()
    assert [(name, trigger) for name, trigger, _ in synced] == [("alpha", "manual")]
