"""registry 0010_finite_numbers: Infinity and NaN that the API stored before it refused them (a tool's timeout, a
number inside a JSON field, the audit log's copy) are replaced, so GET /api/tools, the export and the audit log
are JSON again. The migration runs through Django's MigrationExecutor; its function on its own for the rest."""

from __future__ import annotations

import importlib
import json
import math

import pytest
from django.apps import apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from registry import exchange
from registry.models import AuditEntry, Tool
from tests.factories import ToolFactory

migration = importlib.import_module("registry.migrations.0010_finite_numbers")

BEFORE, AFTER = ("registry", "0009_user_credentials"), ("registry", "0010_finite_numbers")


def json_can_hold_them() -> bool:
    """Only an SQLite whose json_valid accepts JSON5 took Python's Infinity as JSON text (Django's check
    constraint); PostgreSQL's jsonb and older SQLite refused the write, so there only float fields hold them."""
    if connection.vendor != "sqlite":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT json_valid('[Infinity]')")
        return bool(cursor.fetchone()[0])


def strict_json(text: str | bytes) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def store_old_values() -> dict[str, Tool]:
    """What the old API let in, written past today's services (they refuse it) as it was then."""
    tools = {
        "infinite": ToolFactory(name="infinite", timeout=5.0),
        "negative": ToolFactory(name="negative", timeout=5.0),
        "fine": ToolFactory(name="fine", timeout=2.5),
    }
    Tool.objects.filter(name="infinite").update(timeout=math.inf)
    Tool.objects.filter(name="negative").update(timeout=-math.inf)
    if connection.vendor == "postgresql":  # SQLite stores NaN as NULL
        tools["nan"] = ToolFactory(name="nan", timeout=5.0)
        Tool.objects.filter(name="nan").update(timeout=math.nan)
    if json_can_hold_them():
        schema = {"type": "object", "properties": {"n": {"type": "number", "minimum": 0, "maximum": math.inf}}}
        Tool.objects.filter(name="infinite").update(
            input_schema=schema, annotations={"title": "NaN and Infinity", "x": [1, math.nan, 2], "y": -math.inf}
        )
        AuditEntry.objects.create(
            at=timezone.now(), action="update", kind="tool", target="infinite", after={"timeout": math.inf}
        )
    return tools


def check_cleaned() -> None:
    assert Tool.objects.get(name="infinite").timeout is None
    assert Tool.objects.get(name="negative").timeout is None
    assert Tool.objects.get(name="fine").timeout == 2.5
    if connection.vendor == "postgresql":
        assert Tool.objects.get(name="nan").timeout is None
    if json_can_hold_them():
        tool = Tool.objects.get(name="infinite")
        # An infinite bound is no bound: the key goes (null would make the schema invalid).
        assert tool.input_schema == {"type": "object", "properties": {"n": {"type": "number", "minimum": 0}}}
        assert tool.annotations == {"title": "NaN and Infinity", "x": [1, 2]}
        assert AuditEntry.objects.get(target="infinite").after == {}
    strict_json(json.dumps(exchange.catalog_export()))


@pytest.mark.django_db(transaction=True)
def test_the_migration_replaces_stored_non_finite_numbers():
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    store_old_values()
    executor = MigrationExecutor(connection)  # the graph again, as `migrate` would load it
    executor.migrate([AFTER])
    check_cleaned()


@pytest.mark.django_db
def test_the_api_answers_json_again(staff_client):
    store_old_values()
    with pytest.raises(ValueError, match="Infinity is not JSON"):  # what old databases serve today
        strict_json(staff_client.get("/api/tools").content)
    assert migration.replace_non_finite(apps, None) >= 2
    strict_json(staff_client.get("/api/tools").content)
    check_cleaned()
    if json_can_hold_them():
        strict_json(staff_client.get("/api/audit").content)


@pytest.mark.django_db
def test_a_clean_catalog_is_left_alone():
    """Strings that merely say NaN or Infinity are candidates for the database's text search, not changes."""
    ToolFactory(name="t", timeout=1.5, annotations={"title": "NaN, Infinity and beyond"})
    AuditEntry.objects.create(at=timezone.now(), action="other", detail={"note": "-Infinity"})
    assert migration.replace_non_finite(apps, None) == 0
    assert Tool.objects.get(name="t").annotations == {"title": "NaN, Infinity and beyond"}


@pytest.mark.parametrize(
    ("stored", "cleaned"),
    [
        ({"a": math.inf, "b": 1}, {"b": 1}),
        ([math.nan, [1.5, -math.inf], {"c": {"d": math.inf}}], [[1.5], {"c": {}}]),
        ("Infinity", "Infinity"),
        (None, None),
    ],
)
def test_non_finite_numbers_are_dropped_with_their_key_or_slot(stored, cleaned):
    assert migration.finite(stored) == cleaned


def test_a_non_finite_json_value_becomes_the_fields_default_or_null():
    assert migration._cleaned(Tool._meta.get_field("annotations"), math.inf) == {}
    assert migration._cleaned(Tool._meta.get_field("output_schema"), math.nan) is None
    assert migration._cleaned(Tool._meta.get_field("timeout"), -math.inf) is None
