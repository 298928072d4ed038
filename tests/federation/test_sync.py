"""federation.sync with a real upstream process (tests/fixtures/drifting_server.py over stdio) whose
tool list a test rewrites between syncs; the triggers (a gateway created or changed, list_changed,
by hand) and the failure path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction

from federation import scheduler, services, sync
from registry import exchange
from registry import services as registry_services
from registry.catalog_sync import CatalogDiff
from registry.choices import ChangeStatus, Health, SyncTrigger
from registry.exceptions import InvalidInput
from registry.models import DefinitionChange, Gateway, SyncRun, Tool
from tests.fixtures.drifting_server import write_state

SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "drifting_server.py"


def listed(name: str, description: str = "", **extra) -> dict:
    return {"name": name, "description": description, "inputSchema": {"type": "object", "properties": {}}, **extra}


def stdio_gateway(name: str, state: Path) -> dict:
    return {
        "name": name,
        "transport": "stdio",
        "era": "legacy",
        "command": sys.executable,
        "args": [str(SERVER), "--state", str(state)],
    }


@pytest.fixture
def state(tmp_path) -> Path:
    path = tmp_path / "tools.json"
    write_state(path, [listed("echo", "Echoes."), listed("sum", "Adds.")])
    return path


@pytest.fixture
def enqueued(monkeypatch, settings) -> list[tuple]:
    """What federation asked the scheduler to run (nothing is run), with background work on."""
    settings.GATEWAY_SCHEDULER = "inprocess"
    calls: list[tuple] = []
    monkeypatch.setattr(
        scheduler, "enqueue", lambda job, gateway_id, **options: calls.append((job, gateway_id, options))
    )
    return calls


@pytest.mark.django_db(transaction=True)
def test_a_sync_follows_the_upstreams_changing_list(state, enqueued):
    """gateway_add reads the upstream once (a run with trigger "change", no second sync asked for);
    each gateway_sync then applies what changed upstream and records a run."""
    gateway, report = services.gateway_add(data=stdio_gateway("fx", state))
    assert report.added == ["tool echo", "tool sum"]
    assert enqueued == []  # gateway_add is the sync a created gateway would ask for
    [first] = SyncRun.objects.filter(gateway=gateway)
    assert (first.trigger, first.ok, first.added) == (SyncTrigger.CHANGE, True, ["tool echo", "tool sum"])
    assert gateway.last_synced_at is not None

    write_state(state, [listed("echo", "Echoes."), listed("product", "Multiplies.")])
    run = sync.gateway_sync(gateway=gateway)
    assert (run.trigger, run.ok, run.added, run.removed, run.updated) == (
        SyncTrigger.MANUAL,
        True,
        ["tool product"],
        ["tool sum"],
        [],
    )
    assert sorted(Tool.objects.filter(gateway=gateway).values_list("name", flat=True)) == ["echo", "product"]
    assert SyncRun.objects.filter(gateway=gateway).count() == 2

    write_state(state, [listed("echo", "Echoes, louder."), listed("product", "Multiplies.")])
    run = sync.gateway_sync(gateway=gateway)
    assert run.held == ["tool echo"]
    assert DefinitionChange.objects.get(tool__name="echo").status == ChangeStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_list_changed_syncs_with_its_trigger(state):
    gateway, _ = services.gateway_add(data=stdio_gateway("fx", state))
    write_state(state, [listed("echo", "Echoes.")])
    async_to_sync(sync.after_list_changed)("fx", None)
    run = SyncRun.objects.filter(gateway=gateway).first()
    assert (run.trigger, run.removed) == (SyncTrigger.LIST_CHANGED, ["tool sum"])


@pytest.mark.django_db(transaction=True)
def test_gateway_refresh_is_a_manual_sync_with_the_old_report(state):
    gateway, _ = services.gateway_add(data=stdio_gateway("fx", state))
    write_state(state, [listed("echo", "Echoes.")])
    report = services.gateway_refresh(gateway=gateway)
    assert isinstance(report, CatalogDiff)
    assert report.summary() == "0 added, 0 updated, 1 removed"
    assert SyncRun.objects.filter(gateway=gateway).first().trigger == SyncTrigger.MANUAL


@pytest.mark.django_db(transaction=True)
def test_a_failed_sync_is_recorded_and_raised_as_a_sentence(state, tmp_path):
    """An upstream that cannot be started: InvalidInput naming the gateway, a failed run with the
    sentence, a failed health check; the entries stay as last read."""
    gateway, _ = services.gateway_add(data=stdio_gateway("fx", state))
    Gateway.objects.filter(pk=gateway.pk).update(command=str(tmp_path / "no-such-program"))
    gateway.refresh_from_db()
    with pytest.raises(InvalidInput, match="Could not sync 'fx': ") as failure:
        sync.gateway_sync(gateway=gateway, trigger=SyncTrigger.SCHEDULE, timeout=5)
    assert "Traceback" not in failure.value.message
    run = SyncRun.objects.filter(gateway=gateway).first()
    assert (run.ok, run.trigger) == (False, SyncTrigger.SCHEDULE)
    assert run.error
    assert run.error in failure.value.message
    gateway.refresh_from_db()
    assert gateway.health == Health.DEGRADED
    assert gateway.last_error == run.error
    assert Tool.objects.filter(gateway=gateway).count() == 2


# ---- gateway_saved: which writes ask for a sync ----------------------------------------------------


def commit(django_capture_on_commit_callbacks, write):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        return write()


@pytest.mark.django_db
def test_creating_or_reconnecting_a_gateway_enqueues_a_sync(enqueued, django_capture_on_commit_callbacks):
    """Created, changed in how to reach it, or enabled again: a sync (trigger change) is enqueued after
    commit; a change of description or a disable is not a reason to read the upstream."""
    data = {"name": "fx", "url": "http://127.0.0.1:9/mcp"}
    gateway = commit(django_capture_on_commit_callbacks, lambda: registry_services.entry_create(Gateway, data=data))
    assert enqueued == [("sync", gateway.pk, {"trigger": SyncTrigger.CHANGE})]

    enqueued.clear()
    commit(
        django_capture_on_commit_callbacks, lambda: registry_services.entry_update(gateway, data={"description": "x"})
    )
    assert enqueued == []
    new_url = {"url": "http://127.0.0.1:10/mcp"}
    commit(django_capture_on_commit_callbacks, lambda: registry_services.entry_update(gateway, data=new_url))
    assert enqueued == [("sync", gateway.pk, {"trigger": SyncTrigger.CHANGE})]

    enqueued.clear()
    everything = Gateway.objects.all()
    commit(django_capture_on_commit_callbacks, lambda: registry_services.entries_set_enabled(everything, enabled=False))
    assert enqueued == []
    commit(django_capture_on_commit_callbacks, lambda: registry_services.entries_set_enabled(everything, enabled=True))
    assert enqueued == [("sync", gateway.pk, {"trigger": SyncTrigger.CHANGE})]


@pytest.mark.django_db
def test_a_disabled_gateway_is_not_synced_and_a_rolled_back_one_is_not_announced(
    enqueued, django_capture_on_commit_callbacks
):
    data = {"name": "off", "url": "http://127.0.0.1:9/mcp", "enabled": False}
    commit(django_capture_on_commit_callbacks, lambda: registry_services.entry_create(Gateway, data=data))
    assert enqueued == []

    def rolled_back():
        registry_services.entry_create(Gateway, data={"name": "gone", "url": "http://127.0.0.1:9/mcp"})
        transaction.set_rollback(True)

    commit(django_capture_on_commit_callbacks, rolled_back)
    assert enqueued == []


@pytest.mark.django_db
def test_a_catalog_import_that_creates_a_gateway_enqueues_its_sync(enqueued, django_capture_on_commit_callbacks):
    document = {
        "format": exchange.FORMAT,
        "version": exchange.VERSION,
        "gateways": [{"name": "imported", "url": "http://127.0.0.1:9/mcp"}],
    }
    commit(django_capture_on_commit_callbacks, lambda: exchange.catalog_import(document=document, dry_run=True))
    assert enqueued == []
    commit(django_capture_on_commit_callbacks, lambda: exchange.catalog_import(document=document))
    assert enqueued == [("sync", Gateway.objects.get(name="imported").pk, {"trigger": SyncTrigger.CHANGE})]


@pytest.mark.django_db
def test_a_failing_sync_never_breaks_the_write_that_asked_for_it(
    monkeypatch, settings, django_capture_on_commit_callbacks
):
    """With a scheduler that runs the job inline, the failure is recorded, not raised at the saver."""
    settings.GATEWAY_SCHEDULER = "inprocess"

    def inline(job, gateway_id, **options):
        sync.gateway_sync(gateway=Gateway.objects.get(pk=gateway_id), timeout=2, **options)

    monkeypatch.setattr(scheduler, "enqueue", inline)
    data = {"name": "dead", "url": "http://127.0.0.1:9/mcp"}
    gateway = commit(django_capture_on_commit_callbacks, lambda: registry_services.entry_create(Gateway, data=data))
    run = SyncRun.objects.get(gateway=gateway)
    assert (run.ok, run.trigger) == (False, SyncTrigger.CHANGE)
    assert run.error
