"""The definition rules of wrapped tools (REST, CLI, Python function): one module per kind checks a
tool's ``backend_config`` (and, for REST, its credentials) when the tool is validated, so the admin,
the REST API, imports and commands refuse the same bad definitions with the same messages. The
shapes are documented in docs/tool-backends.md; the backends that run them live in
``transports.protocol.backends``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from registry import validators
from registry.choices import IntegrationType
from registry.tool_kinds import cli, function, rest

_CLEANERS = {
    IntegrationType.REST: rest.clean,
    IntegrationType.CLI: cli.clean,
    IntegrationType.FUNCTION: function.clean,
}


def clean(tool: Any) -> None:  # a registry.models.Tool (a layer above this one)
    """Check (and normalise) a wrapped tool's definition; ValidationError naming the field."""
    cleaner = _CLEANERS.get(IntegrationType(tool.integration_type))
    if cleaner is not None:
        cleaner(tool)
        _check_compiles(tool)


def _check_compiles(tool: Any) -> None:
    """The gateway enforces a wrapped tool's schemas itself (no upstream does): they must compile, with
    no reference outside the schema."""
    for field in ("input_schema", "output_schema"):
        schema = getattr(tool, field)
        if not isinstance(schema, dict):
            continue
        try:
            validators.compile_schema_locally(schema)
        except ValueError as exc:
            raise ValidationError({field: f"The gateway cannot enforce this schema: {exc}."}) from None
