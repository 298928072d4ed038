"""registry.catalog_sync: a read of an upstream applied to the catalog as a difference (local choices
kept), recorded as a sync run, with changed tool definitions held, withheld or accepted per
GATEWAY_DRIFT_POLICY, and approved by people."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from registry import catalog_sync, events, services
from registry.catalog_sync import (
    CatalogDiff,
    catalog_name,
    definition_change_approve,
    definition_change_reject,
    gateway_catalog_apply,
)
from registry.choices import ChangeStatus, Health, SyncTrigger
from registry.exceptions import Conflict
from registry.models import DefinitionChange, Prompt, Resource, ResourceTemplate, SyncRun, Tool
from registry.selectors import catalog_rows
from tests.factories import GatewayFactory, PromptFactory, ResourceFactory, ToolFactory, VirtualServerFactory
from tests.sync_support import tool

ABOUT = {
    "detected_era": "legacy",
    "protocol_version": "2025-11-25",
    "server_info": {"name": "up", "version": "1"},
    "capabilities": {"tools": {}},
}


def announcements(callbacks) -> int:
    """How many catalog announcements wait for the commit among captured on_commit callbacks."""
    return sum(1 for callback in callbacks if callback.__module__ == "registry.events")


def apply(gateway, *, tools=(), resources=(), templates=(), prompts=(), trigger=SyncTrigger.MANUAL) -> SyncRun:
    return gateway_catalog_apply(
        gateway=gateway,
        tools=list(tools),
        resources=list(resources),
        templates=list(templates),
        prompts=list(prompts),
        trigger=trigger,
        started_at=timezone.now(),
        **ABOUT,
    )


def served(name: str) -> dict | None:
    return next((row for row in catalog_rows()["tools"] if row["name"] == name), None)


# ---- the difference ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_sync_adds_updates_and_removes_and_records_the_upstream(django_capture_on_commit_callbacks):
    """Entries are added, changed ones updated, vanished ones removed; the gateway is marked healthy
    with what the upstream said about itself; the whole sync is one catalog change."""
    gateway = GatewayFactory(name="fx", health=Health.DEGRADED, last_error="down", consecutive_failures=1)
    apply(gateway, tools=[tool("echo"), tool("sum")], resources=[{"uri": "test://a", "name": "a"}])
    version = events.catalog_version()
    with django_capture_on_commit_callbacks() as callbacks:
        run = apply(
            gateway,
            tools=[tool("echo"), tool("new")],
            templates=[{"uriTemplate": "test://{x}", "name": "x"}],
            prompts=[{"name": "greet", "arguments": [{"name": "who", "required": True}, {"bad": 1}]}],
        )
    assert (run.added, run.updated, run.removed) == (
        ["tool new", "resource template test://{x}", "prompt greet"],
        [],
        ["tool sum", "resource test://a"],
    )
    assert CatalogDiff.from_run(run).summary() == "3 added, 0 updated, 2 removed"
    assert ResourceTemplate.objects.get(uri_template="test://{x}").gateway == gateway
    assert Prompt.objects.get(name="greet").arguments == [{"name": "who", "required": True}]
    assert not Resource.objects.exists()
    gateway.refresh_from_db()
    assert (gateway.health, gateway.last_error, gateway.protocol_version) == (Health.HEALTHY, "", "2025-11-25")
    assert (gateway.server_info, gateway.capabilities) == ({"name": "up", "version": "1"}, {"tools": {}})
    assert gateway.last_seen_at is not None
    assert gateway.last_synced_at is not None
    assert events.catalog_version() == version + 1
    assert announcements(callbacks) == 1


@pytest.mark.django_db
def test_a_sync_run_is_recorded_with_what_changed():
    """Each sync leaves a SyncRun: trigger, when, how long, ok, and the labels of what changed."""
    gateway = GatewayFactory(name="fx")
    started = timezone.now() - timedelta(seconds=2)
    run = gateway_catalog_apply(
        gateway=gateway,
        tools=[tool("echo")],
        resources=[],
        templates=[],
        prompts=[],
        trigger=SyncTrigger.SCHEDULE,
        started_at=started,
        **ABOUT,
    )
    run.refresh_from_db()
    assert (run.gateway, run.trigger, run.ok, run.error) == (gateway, SyncTrigger.SCHEDULE, True, "")
    assert run.started_at == started
    assert run.finished_at >= started
    assert run.duration_ms >= 2000
    assert (run.added, run.updated, run.removed, run.held, run.skipped) == (["tool echo"], [], [], [], [])


@pytest.mark.django_db
def test_a_sync_with_no_change_bumps_nothing_and_still_marks_healthy(django_capture_on_commit_callbacks):
    """Same lists again: no entry written, no catalog change, yet the read counts as a health success."""
    gateway = GatewayFactory(name="fx")
    apply(gateway, tools=[tool("echo")], prompts=[{"name": "p"}])
    gateway.refresh_from_db()
    seen = gateway.last_seen_at
    version = events.catalog_version()
    with django_capture_on_commit_callbacks() as callbacks:
        run = apply(gateway, tools=[tool("echo")], prompts=[{"name": "p"}])
    assert (run.added, run.updated, run.removed, run.held, run.skipped) == ([], [], [], [], [])
    assert run.ok
    gateway.refresh_from_db()
    assert (gateway.health, gateway.last_error) == (Health.HEALTHY, "")
    assert gateway.last_seen_at > seen
    assert events.catalog_version() == version
    assert announcements(callbacks) == 0


@pytest.mark.django_db
def test_an_unchanged_sync_makes_a_bounded_number_of_queries(django_assert_max_num_queries):
    """An unchanged sync of 20 tools reads each kind once, writes the gateway and the run: no per-tool query."""
    gateway = GatewayFactory(name="fx", health=Health.HEALTHY)
    tools = [tool(f"t{i}", description=f"tool {i}") for i in range(20)]
    apply(gateway, tools=tools)
    with django_assert_max_num_queries(20):
        apply(gateway, tools=tools)


@pytest.mark.django_db
def test_local_choices_survive_a_sync():
    """An entry the upstream still has keeps what people chose locally: enabled, catalog name (alias),
    tags, description_override, timeout and virtual-server membership."""
    gateway = GatewayFactory(name="fx")
    apply(gateway, tools=[tool("echo")], prompts=[{"name": "greet"}])
    echo = Tool.objects.get(name="echo")
    services.entry_update(
        echo,
        data={"name": "my_echo", "enabled": False, "tags": ["mine"], "timeout": 5.0, "description_override": "local"},
    )
    server = VirtualServerFactory(name="main")
    server.tools.add(echo)
    greet = Prompt.objects.get(name="greet")
    services.entry_update(greet, data={"enabled": False})

    run = apply(gateway, tools=[tool("echo", title="Echo")], prompts=[{"name": "greet", "description": "hi"}])
    assert run.held == ["tool my_echo"]
    assert run.updated == ["prompt greet"]
    echo.refresh_from_db()
    assert (echo.name, echo.enabled, echo.tags, echo.timeout) == ("my_echo", False, ["mine"], 5.0)
    assert echo.description_override == "local"
    assert echo.upstream_name == "echo"
    assert list(server.tools.all()) == [echo]
    greet.refresh_from_db()
    assert (greet.enabled, greet.description) == (False, "hi")


@pytest.mark.django_db
def test_names_other_sources_hold_get_the_gateway_prefix():
    """A tool or prompt name another source holds becomes '<gateway>_<name>', the upstream name kept."""
    ToolFactory(name="echo", gateway=GatewayFactory(name="other"))
    PromptFactory(name="greet")
    gateway = GatewayFactory(name="fx")
    run = apply(gateway, tools=[tool("echo")], prompts=[{"name": "greet"}])
    assert CatalogDiff.from_run(run).renamed == {"echo": "fx_echo", "greet": "fx_greet"}
    assert Tool.objects.get(gateway=gateway).upstream_name == "echo"
    assert Prompt.objects.get(gateway=gateway).original_name == "greet"


@pytest.mark.django_db
def test_entries_the_catalog_cannot_take_are_skipped_and_the_rest_stored():
    """A bad name, a bad schema or a URI another source holds is skipped with the reason; not fatal."""
    ResourceFactory(uri="test://local")
    gateway = GatewayFactory(name="fx")
    run = apply(
        gateway,
        tools=[tool("good"), tool("has spaces"), tool("bad_schema", inputSchema={"type": "object", "properties": 5})],
        resources=[{"uri": "test://local", "name": "clash"}, {"uri": "test://mine", "name": "mine"}],
    )
    assert list(Tool.objects.filter(gateway=gateway).values_list("name", flat=True)) == ["good"]
    assert list(Resource.objects.filter(gateway=gateway).values_list("uri", flat=True)) == ["test://mine"]
    assert len(run.skipped) == 3
    assert "has spaces" in run.skipped[0]
    assert "input_schema" in run.skipped[1]
    assert "another source already has it" in run.skipped[2]


@pytest.mark.django_db
def test_old_runs_beyond_the_limit_are_deleted(settings):
    """GATEWAY_SYNC_RUNS_KEPT runs per gateway are kept, the newest; other gateways' runs are not touched."""
    settings.GATEWAY_SYNC_RUNS_KEPT = 3
    gateway, other = GatewayFactory(name="fx"), GatewayFactory(name="other")
    apply(other)
    runs = [apply(gateway) for _ in range(5)]
    assert list(SyncRun.objects.filter(gateway=gateway).values_list("pk", flat=True)) == [r.pk for r in runs[:1:-1]]
    assert SyncRun.objects.filter(gateway=other).count() == 1


@pytest.mark.django_db
def test_a_failure_is_a_failed_run_and_a_failed_check():
    """sync_failure_record: a failed run with the sentence; the gateway's entries stay as last read."""
    gateway = GatewayFactory(name="fx")
    apply(gateway, tools=[tool("echo")])
    version = events.catalog_version()
    run = catalog_sync.sync_failure_record(
        gateway=gateway, trigger=SyncTrigger.SCHEDULE, started_at=timezone.now(), error="connection refused by x"
    )
    assert (run.ok, run.error, run.trigger) == (False, "connection refused by x", SyncTrigger.SCHEDULE)
    gateway.refresh_from_db()
    assert gateway.health == Health.DEGRADED
    assert gateway.last_error == "connection refused by x"
    assert Tool.objects.filter(gateway=gateway).count() == 1
    assert events.catalog_version() == version + 1  # healthy -> degraded: a change of state, announced


def test_prefixed_names_stay_within_64_characters_and_unique():
    long = "x" * 80
    first = catalog_name("gateway-one", long, {long})
    second = catalog_name("gateway-two", long, {long})
    assert len(first) <= 64
    assert len(second) <= 64
    assert first != second
    assert catalog_name("g", "free", set()) == "free"


# ---- definition drift ---------------------------------------------------------------------------

CHANGED = {
    "description": "Echoes the text.\nNow also shouts.",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}, "loud": {"type": "boolean"}}},
}


@pytest.fixture
def echo(db):
    gateway = GatewayFactory(name="fx")
    apply(gateway, tools=[tool("echo", description="Echoes the text.")])
    return Tool.objects.get(name="echo")


@pytest.mark.django_db
def test_hold_keeps_the_approved_definition_serving_and_records_the_change(echo, settings):
    """hold (default): the new definition waits in pending_definition, a pending DefinitionChange holds
    the per-field diff (unified text for the description and pretty-printed schemas), the run lists it."""
    settings.GATEWAY_DRIFT_POLICY = "hold"
    version = events.catalog_version()
    run = apply(echo.gateway, tools=[tool("echo", **CHANGED)])
    assert run.held == ["tool echo"]
    assert run.updated == []
    echo.refresh_from_db()
    assert echo.description == "Echoes the text."
    assert echo.pending_definition["description"] == CHANGED["description"]
    assert echo.drift_detected_at is not None
    assert served("echo")["description"] == "Echoes the text."
    change = DefinitionChange.objects.get(tool=echo)
    assert (change.status, change.gateway) == (ChangeStatus.PENDING, echo.gateway)
    assert change.previous["description"] == "Echoes the text."
    assert change.current == echo.pending_definition
    by_field = {item["field"]: item for item in change.diff}
    assert set(by_field) == {"description", "input_schema"}
    assert "+Now also shouts." in by_field["description"]["text"]
    assert '+    "loud": {' in by_field["input_schema"]["text"]
    assert by_field["input_schema"]["before"] == {"type": "object", "properties": {}}
    assert events.catalog_version() == version + 1

    again = apply(echo.gateway, tools=[tool("echo", **CHANGED)])
    assert again.held == []  # already waiting: nothing new to review
    assert DefinitionChange.objects.filter(tool=echo).count() == 1


@pytest.mark.django_db
def test_withhold_leaves_the_tool_out_until_approved(echo, settings):
    settings.GATEWAY_DRIFT_POLICY = "withhold"
    apply(echo.gateway, tools=[tool("echo", **CHANGED)])
    assert served("echo") is None
    definition_change_approve(tool=echo, user="alice")
    assert served("echo")["description"] == CHANGED["description"]


@pytest.mark.django_db
def test_accept_applies_at_once_and_still_records(echo, settings):
    settings.GATEWAY_DRIFT_POLICY = "accept"
    run = apply(echo.gateway, tools=[tool("echo", **CHANGED)])
    assert (run.updated, run.held) == (["tool echo"], [])
    echo.refresh_from_db()
    assert (echo.description, echo.pending_definition) == (CHANGED["description"], None)
    change = DefinitionChange.objects.get(tool=echo)
    assert change.status == ChangeStatus.ACCEPTED
    assert change.decided_at is not None


@pytest.mark.django_db
def test_a_newer_change_supersedes_the_pending_one(echo):
    apply(echo.gateway, tools=[tool("echo", **CHANGED)])
    newer = {**CHANGED, "description": "Third version."}
    run = apply(echo.gateway, tools=[tool("echo", **newer)])
    assert run.held == ["tool echo"]
    statuses = list(DefinitionChange.objects.filter(tool=echo).order_by("pk").values_list("status", flat=True))
    assert statuses == [ChangeStatus.SUPERSEDED, ChangeStatus.PENDING]
    echo.refresh_from_db()
    assert echo.pending_definition["description"] == "Third version."
    assert echo.description == "Echoes the text."


@pytest.mark.django_db
def test_returning_to_the_approved_definition_clears_the_hold(echo):
    apply(echo.gateway, tools=[tool("echo", **CHANGED)])
    version = events.catalog_version()
    run = apply(echo.gateway, tools=[tool("echo", description="Echoes the text.")])
    assert (run.held, run.updated) == ([], ["tool echo"])
    echo.refresh_from_db()
    assert (echo.pending_definition, echo.drift_detected_at) == (None, None)
    assert DefinitionChange.objects.get(tool=echo).status == ChangeStatus.SUPERSEDED
    assert events.catalog_version() == version + 1


@pytest.mark.django_db
def test_approval_puts_the_held_definition_into_service(echo, django_capture_on_commit_callbacks):
    apply(echo.gateway, tools=[tool("echo", **CHANGED)])
    version = events.catalog_version()
    with django_capture_on_commit_callbacks() as callbacks:
        change = definition_change_approve(tool=echo, user="alice")
    assert (change.status, change.decided_by) == (ChangeStatus.APPROVED, "alice")
    assert change.decided_at is not None
    echo.refresh_from_db()
    assert echo.description == CHANGED["description"]
    assert echo.input_schema == CHANGED["inputSchema"]
    assert (echo.pending_definition, echo.drift_detected_at) == (None, None)
    assert served("echo")["description"] == CHANGED["description"]
    assert events.catalog_version() == version + 1
    assert announcements(callbacks) == 1
    # the approved definition is now the stored one: the next sync of it changes nothing
    run = apply(echo.gateway, tools=[tool("echo", **CHANGED)])
    assert (run.held, run.updated) == ([], [])


@pytest.mark.django_db
def test_approving_with_nothing_pending_is_a_conflict(echo):
    with pytest.raises(Conflict, match="no changed definition waiting"):
        definition_change_approve(tool=echo)


@pytest.mark.django_db
def test_a_description_override_keeps_serving_through_drift(echo):
    services.entry_update(echo, data={"description_override": "Ours."})
    apply(echo.gateway, tools=[tool("echo", **CHANGED)])
    definition_change_approve(tool=echo)
    assert served("echo")["description"] == "Ours."


@pytest.mark.django_db
def test_a_new_tool_is_not_drift(echo):
    run = apply(echo.gateway, tools=[tool("echo", description="Echoes the text."), tool("fresh", description="new")])
    assert (run.added, run.held) == (["tool fresh"], [])
    assert not DefinitionChange.objects.exists()


@pytest.mark.django_db
def test_a_changed_definition_the_catalog_cannot_take_is_skipped_not_held(echo):
    run = apply(echo.gateway, tools=[tool("echo", inputSchema={"type": "object", "properties": 5})])
    assert run.held == []
    assert "input_schema" in run.skipped[0]
    echo.refresh_from_db()
    assert echo.pending_definition is None


@pytest.mark.django_db
def test_a_rejected_definition_keeps_the_approved_one_and_is_not_held_again(echo, settings):
    """Rejecting: the approved definition stays (a withheld tool is served again), the change is marked
    rejected, and a later sync with that same definition holds nothing; a different one is held as usual."""
    settings.GATEWAY_DRIFT_POLICY = "withhold"
    apply(echo.gateway, tools=[tool("echo", **CHANGED)])
    assert served("echo") is None
    version = events.catalog_version()
    change = definition_change_reject(tool=echo, user="alice")
    assert (change.status, change.decided_by) == (ChangeStatus.REJECTED, "alice")
    assert events.catalog_version() == version + 1
    echo.refresh_from_db()
    assert (echo.description, echo.pending_definition) == ("Echoes the text.", None)
    assert served("echo")["description"] == "Echoes the text."

    again = apply(echo.gateway, tools=[tool("echo", **CHANGED)])
    assert (again.held, again.updated) == ([], [])
    echo.refresh_from_db()
    assert echo.pending_definition is None
    assert served("echo")["description"] == "Echoes the text."

    other = apply(echo.gateway, tools=[tool("echo", **{**CHANGED, "description": "Yet another."})])
    assert other.held == ["tool echo"]
    definition_change_reject(tool=echo, user="bob")
    with pytest.raises(Conflict):  # nothing waits any more
        definition_change_reject(tool=echo, user="bob")
