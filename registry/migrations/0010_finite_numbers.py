"""Infinity and NaN out of the catalog.

Before the API refused non-finite numbers (422 since the JSON body parser and the write services check them), a
tool's ``timeout`` of Infinity was stored as given (both databases keep an infinite float; PostgreSQL NaN as well),
and every answer that contains it (GET /api/tools, the export) was then no JSON: Python writes ``Infinity``. JSON
fields held them only where the database took Python's ``Infinity`` as JSON text (an SQLite whose json_valid
accepts JSON5; PostgreSQL's jsonb and older SQLite refused the write): a schema's ``maximum``, an annotation, the
audit log's copy of either. This finds them in every float and JSON field of the app and replaces them: a float
field's value by the field's default, or null where the field allows it; inside a JSON value the number is dropped
with its key or list slot (an infinite bound is no bound: ``"maximum": Infinity`` meant what no ``maximum`` means,
and null there would make the schema invalid).
"""

import math
import sys

from django.db import migrations, models
from django.db.models import Q
from django.db.models.functions import Cast

_DROP = object()


def finite(value):
    """``value`` with every non-finite number dropped (``_DROP`` when it is one itself)."""
    if isinstance(value, float) and not math.isfinite(value):
        return _DROP
    if isinstance(value, dict):
        return {key: item for key, item in ((k, finite(v)) for k, v in value.items()) if item is not _DROP}
    if isinstance(value, list):
        return [item for item in map(finite, value) if item is not _DROP]
    return value


def _replacement(field):
    """The field's default, or null where it allows it."""
    return field.get_default() if field.has_default() or not field.null else None


def _candidates(rows, field):
    """Rows that may hold a non-finite number in ``field``, found by the database (the audit log is large)."""
    if isinstance(field, models.FloatField):
        # PostgreSQL sorts NaN above every number; SQLite stores NaN as NULL.
        beyond = Q(**{f"{field.name}__gt": sys.float_info.max}) | Q(**{f"{field.name}__lt": -sys.float_info.max})
        return rows.filter(beyond)
    # As text, Python's JSON writes them Infinity, -Infinity and NaN.
    text = rows.annotate(finite_text=Cast(field.name, models.TextField()))
    return text.filter(Q(finite_text__contains="Infinity") | Q(finite_text__contains="NaN"))


def _cleaned(field, value):
    if isinstance(field, models.FloatField):
        return value if value is None or math.isfinite(value) else _replacement(field)
    value = finite(value)
    return _replacement(field) if value is _DROP else value


def replace_non_finite(apps, schema_editor, app_label="registry"):
    """Every float and JSON field of the app's models, cleaned as the module says; returns the rows changed."""
    alias = schema_editor.connection.alias if schema_editor is not None else "default"
    changed = 0
    for model in apps.get_app_config(app_label).get_models():
        rows = model._base_manager.db_manager(alias).all()
        for field in model._meta.concrete_fields:
            if not isinstance(field, models.FloatField | models.JSONField):
                continue
            # Read before writing: SQLite's cursor would walk the rows being changed.
            for pk, value in list(_candidates(rows, field).values_list("pk", field.name)):
                new = _cleaned(field, value)
                if new != value:  # whatever was dropped leaves it unequal, NaN included
                    rows.filter(pk=pk).update(**{field.name: new})
                    changed += 1
    return changed


class Migration(migrations.Migration):

    dependencies = [
        ("registry", "0009_user_credentials"),
    ]

    operations = [
        migrations.RunPython(replace_non_finite, migrations.RunPython.noop, elidable=True),
    ]
