"""The audit log of catalog changes and tokens (docs/governance.md "audit log"): who (actor and via: admin, API,
command, import, sync), what (before and after as the export shows it, never a secret), token events; the
admin's list, detail and export; GET /api/audit; retention; the password validators of ensure_superuser."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.utils import timezone

from registry import audit, auth, exchange, services
from registry.audit import os_user
from registry.exceptions import Conflict
from registry.models import AuditEntry, Gateway, Prompt, Tool
from registry.representation import KINDS, entry_fields
from tests.conftest import ApiClient, basic
from tests.factories import PromptFactory, ToolFactory, UserFactory, VirtualServerFactory

pytestmark = pytest.mark.django_db

UPSTREAM_SECRET = "upstream-password-never-in-the-audit-log"


def entries(**filters) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(**filters).order_by("pk"))


def test_a_service_write_is_recorded_with_before_and_after():
    """entry_create and entry_update record one row each, with the export's representation before/after."""
    with audit.acting("alice", "command"):
        prompt = services.entry_create(Prompt, data={"name": "p1", "template": "Hi"})
        services.entry_update(prompt, data={"description": "greets"})
    created, updated = entries(target="p1")
    assert (created.action, created.kind, created.actor, created.via) == ("create", "prompt", "alice", "command")
    assert created.before is None
    assert created.after["template"] == "Hi"
    assert updated.action == "update"
    assert updated.before["description"] == ""
    assert updated.after["description"] == "greets"


def test_an_update_that_changes_nothing_records_nothing():
    prompt = PromptFactory(name="same")
    services.entry_update(prompt, data={"template": prompt.template})
    assert entries(target="same") == []


def test_nobody_acting_is_the_system():
    """Writes outside any entry point (the scheduler, a worker) are the system's."""
    services.entry_create(Prompt, data={"name": "sys", "template": "x"})
    (entry,) = entries(target="sys")
    assert (entry.actor, entry.via) == ("", "system")


def test_credentials_never_appear_only_that_they_changed():
    """A gateway's credentials are marked "(changed)", never shown; env values under secret-looking keys are
    redacted."""
    gateway = services.entry_create(
        Gateway,
        data={
            "name": "up",
            "url": "http://127.0.0.1:9/mcp",
            "auth_type": "basic",
            "credentials": {"username": "u", "password": UPSTREAM_SECRET},
        },
        gateway_saved=False,
    )
    services.entry_update(gateway, data={"auth_type": "basic", "credentials": {"username": "u", "password": "other"}})
    services.entry_update(gateway, data={"description": "no secret change"})
    created, changed, described = entries(target="up")
    dumped = json.dumps([created.after, changed.before, changed.after, described.after])
    assert UPSTREAM_SECRET not in dumped
    assert "other" not in dumped
    assert created.after["credentials"] == "(changed)"
    assert changed.after["credentials"] == "(changed)"
    assert "credentials" not in described.after
    stdio = services.entry_create(
        Gateway,
        data={"name": "local", "transport": "stdio", "command": "x", "env": {"API_TOKEN": "tok-secret", "MODE": "a"}},
        gateway_saved=False,
    )
    (entry,) = entries(target=stdio.name)
    assert entry.after["env"] == {"API_TOKEN": "(redacted)", "MODE": "a"}


def test_deletes_bulk_enable_and_server_members_are_recorded():
    tool = ToolFactory(name="t1")
    server = VirtualServerFactory(name="srv")
    services.tool_update(tool=tool, data={}, server="srv")
    (member,) = entries(kind="virtual server", target="srv")
    assert member.before["tools"] == []
    assert member.after["tools"] == ["t1"]
    services.entries_set_enabled(Tool.objects.filter(pk=tool.pk), enabled=False)
    (disabled,) = entries(kind="tool", target="t1", action="update")
    assert disabled.before["enabled"] is True
    assert disabled.after["enabled"] is False
    services.entry_delete(server)
    services.entries_delete(Tool.objects.filter(pk=tool.pk))
    assert [e.kind for e in entries(action="delete")] == ["virtual server", "tool"]
    assert entries(action="delete")[1].before["name"] == "t1"


def test_a_failed_write_records_nothing():
    """The row is written in the writing transaction: a refused change leaves no trace."""
    PromptFactory(name="taken")
    with pytest.raises(Conflict):
        services.entry_create(Prompt, data={"name": "taken", "template": "x"})
    assert entries(action="create") == []


@override_settings(GATEWAY_AUDIT_CATALOG=False)
def test_catalog_audit_can_be_switched_off():
    services.entry_create(Prompt, data={"name": "quiet", "template": "x"})
    assert entries() == []


def test_the_admin_records_the_logged_in_user(admin_user):
    """A delete in the admin is the admin user's, via admin."""
    prompt = PromptFactory(name="gone")
    client = Client()
    client.force_login(admin_user)
    response = client.post(f"/admin/registry/prompt/{prompt.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    (entry,) = entries(action="delete")
    assert (entry.actor, entry.via, entry.target) == ("admin", "admin", "gone")


def test_the_api_records_the_token_user(staff_user, token_client):
    """A write over the REST API with a bearer token is that token's user's, via api."""
    response = token_client.post_json("/api/prompts", {"name": "api-made", "template": "x"})
    assert response.status_code == 201, response.content
    (entry,) = entries(target="api-made")
    assert (entry.actor, entry.via) == ("staff", "api")


def test_a_command_records_the_os_user():
    VirtualServerFactory(name="cmd-srv")
    ToolFactory(name="t2")
    call_command("server_add", "cmd-srv2", "--tool", "t2", stdout=io.StringIO())
    (entry,) = entries(target="cmd-srv2")
    assert (entry.actor, entry.via) == (os_user(), "command")


def test_an_import_is_via_import_and_keeps_the_actor():
    document = {"format": exchange.FORMAT, "version": exchange.VERSION, "prompts": [{"name": "imp", "template": "x"}]}
    with audit.acting("bob", "admin"):
        exchange.catalog_import(document=document)
    (entry,) = entries(target="imp")
    assert (entry.actor, entry.via, entry.action) == ("bob", "import", "create")


def test_a_dry_run_import_records_nothing():
    document = {"format": exchange.FORMAT, "version": exchange.VERSION, "prompts": [{"name": "dry", "template": "x"}]}
    exchange.catalog_import(document=document, dry_run=True)
    assert entries() == []


def test_token_issue_and_revoke_are_recorded_without_the_token(staff_user):
    with audit.acting("admin", "admin"):
        issued = auth.issued_token_create(username="staff", name="ci")
        auth.token_revoke(token_or_jti=issued.token, reason="leaked")
        auth.token_revoke(token_or_jti=issued.token)  # again: nothing new
    made, revoked = entries(action="token")
    assert (made.outcome, made.target, made.actor) == ("issued", issued.record.jti, "admin")
    assert made.detail["user"] == "staff"
    assert made.detail["name"] == "ci"
    assert (revoked.outcome, revoked.detail["reason"]) == ("revoked", "leaked")
    assert issued.token not in json.dumps([made.detail, revoked.detail])


# -- retention ----------------------------------------------------------------------------------------------------


def _entry(at, **kw) -> AuditEntry:
    return AuditEntry.objects.create(at=at, action="other", **kw)


@override_settings(GATEWAY_AUDIT_RETENTION_DAYS=30)
def test_retention_deletes_only_what_is_older():
    now = timezone.now()
    old, fresh = _entry(now - timedelta(days=31), target="old"), _entry(now - timedelta(days=29), target="fresh")
    assert audit.entries_prune(now=now) == 1
    assert list(AuditEntry.objects.values_list("target", flat=True)) == [fresh.target]
    assert not AuditEntry.objects.filter(pk=old.pk).exists()


@override_settings(GATEWAY_AUDIT_RETENTION_DAYS=0)
def test_retention_zero_keeps_everything():
    _entry(timezone.now() - timedelta(days=3000))
    assert audit.entries_prune() == 0
    assert AuditEntry.objects.count() == 1


@override_settings(GATEWAY_AUDIT_RETENTION_DAYS=1)
def test_the_scheduler_tick_prunes_at_most_once_an_hour(monkeypatch):
    from federation import scheduler

    monkeypatch.setattr(scheduler, "_audit_pruned_at", None)
    now = timezone.now()
    _entry(now - timedelta(days=2))
    scheduler.tick(now=now)
    assert AuditEntry.objects.count() == 0
    _entry(now - timedelta(days=2))
    scheduler.tick(now=now + timedelta(minutes=30))
    assert AuditEntry.objects.count() == 1  # not due yet
    scheduler.tick(now=now + timedelta(minutes=61))
    assert AuditEntry.objects.count() == 0


# -- admin --------------------------------------------------------------------------------------------------------


@pytest.fixture
def logged(admin_user):
    with audit.acting("alice", "api"):
        prompt = services.entry_create(Prompt, data={"name": "seen", "template": "a"})
        services.entry_update(prompt, data={"template": "b"})
    with audit.acting("carol", "command"):
        services.entry_create(Prompt, data={"name": "other", "template": "a"})
    client = Client()
    client.force_login(admin_user)
    return client


def test_admin_lists_filters_and_searches(logged):
    page = logged.get("/admin/registry/auditentry/?via__exact=api")
    assert page.status_code == 200
    assert b"seen" in page.content
    assert b"carol" not in page.content
    assert b"carol" in logged.get("/admin/registry/auditentry/?q=other").content
    assert b"Export CSV" in page.content
    assert b"via__exact=api" in page.content


def test_admin_detail_shows_before_after_and_diff_read_only(logged):
    entry = AuditEntry.objects.get(target="seen", action="update")
    page = logged.get(f"/admin/registry/auditentry/{entry.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "-  &quot;template&quot;: &quot;a&quot;" in text
    assert "+  &quot;template&quot;: &quot;b&quot;" in text
    assert 'name="_save"' not in text
    assert logged.get("/admin/registry/auditentry/add/").status_code == 403
    assert logged.post(f"/admin/registry/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_admin_exports_the_filtered_list_as_csv_and_json(logged):
    response = logged.get("/admin/registry/auditentry/export/csv/?actor=alice")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["action"], r["target"]) for r in rows] == [("update", "seen"), ("create", "seen")]
    assert json.loads(rows[0]["after"])["template"] == "b"
    response = logged.get("/admin/registry/auditentry/export/json/?via__exact=command")
    data = json.loads(b"".join(response.streaming_content))
    assert [(r["actor"], r["target"]) for r in data] == [("carol", "other")]
    assert logged.get("/admin/registry/auditentry/export/xml/").status_code == 404


def test_non_staff_cannot_read_or_export_the_log(plain_user, logged):
    client = Client()
    client.force_login(plain_user)
    for url in ("/admin/registry/auditentry/", "/admin/registry/auditentry/export/csv/"):
        response = client.get(url)
        assert response.status_code == 302
        assert "/login/" in response["Location"]
    staff = UserFactory(username="nopes", is_staff=True)  # staff without view_auditentry
    client.force_login(staff)
    assert client.get("/admin/registry/auditentry/").status_code == 403
    assert client.get("/admin/registry/auditentry/export/json/").status_code == 403


# -- REST ---------------------------------------------------------------------------------------------------------


def test_api_lists_with_filters_and_pages(logged, staff_client, reader_client):
    body = staff_client.get("/api/audit?actor=alice&limit=1").json()
    assert body["count"] == 2
    assert len(body["items"]) == 1
    assert body["items"][0]["action"] == "update"
    assert staff_client.get("/api/audit?target=oth").json()["count"] == 1
    assert staff_client.get("/api/audit?kind=prompt&action=create").json()["count"] == 2
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert staff_client.get("/api/audit", {"since": future}).json()["count"] == 0
    assert staff_client.get("/api/audit", {"until": future}).json()["count"] == 3
    assert staff_client.get("/api/audit?action=nonsense").status_code == 422
    assert reader_client.get("/api/audit").status_code == 403
    assert ApiClient().get("/api/audit").status_code == 401


# -- passwords ----------------------------------------------------------------------------------------------------


def test_ensure_superuser_refuses_a_weak_password(monkeypatch):
    """The validators' messages, and no user created."""
    from django.contrib.auth import get_user_model

    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "root")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "x")
    with pytest.raises(CommandError, match="too short"):
        call_command("ensure_superuser", stdout=io.StringIO())
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "password")
    with pytest.raises(CommandError, match="too common"):
        call_command("ensure_superuser", stdout=io.StringIO())
    assert not get_user_model().objects.filter(username="root").exists()
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "choose-a-long-one")
    call_command("ensure_superuser", stdout=io.StringIO())
    assert get_user_model().objects.get(username="root").is_superuser


def test_basic_auth_still_works_for_existing_users(staff_user):
    assert ApiClient(basic("staff")).get("/api/audit").status_code == 200


def test_the_representation_is_the_exports():
    """audit.represent (kept below the services) shows every kind as the catalog export does."""
    tool = ToolFactory(name="rep")
    server = VirtualServerFactory(name="rep-srv")
    server.tools.add(tool)
    for kind in KINDS:
        for obj in kind.model._default_manager.all():
            assert audit.represent(obj) == json.loads(json.dumps(entry_fields(obj, kind.fields), default=str))
