"""JSON Schema 2020-12 checks for wrapped tools' arguments and results (jsonschema-rs, compiled
once per catalog snapshot), and the one-line description of a failure that names the field."""

from __future__ import annotations

import logging
from typing import Any

import jsonschema_rs

logger = logging.getLogger(__name__)

Validator = Any  # a compiled jsonschema_rs validator


def _refuse_remote(uri: str) -> Any:
    # jsonschema-rs would fetch a remote $ref over HTTP: a stored schema must never make the gateway
    # request a URL (the registry refuses such schemas for wrapped tools; this guards the rest).
    raise ValueError(f"remote reference {uri!r} refused")


def compile_schema(schema: Any, *, what: str) -> Validator | None:
    """A compiled validator for ``schema`` (2020-12 unless it says otherwise), or None when the schema
    cannot be compiled (it was checked when stored; a schema that still fails is logged, not enforced)."""
    if not isinstance(schema, dict):
        return None
    try:
        return jsonschema_rs.validator_for(schema, validate_formats=False, retriever=_refuse_remote)
    except (jsonschema_rs.ValidationError, ValueError, TypeError) as exc:
        logger.warning("The schema of %s cannot be compiled and is not enforced: %s", what, exc)
        return None


def _pointer(path: Any) -> str:
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in path) if path else ""


def first_error(validator: Validator | None, instance: Any) -> tuple[str, str] | None:
    """(JSON pointer of the offending value, message) for the first violation, or None when valid."""
    if validator is None:
        return None
    for error in validator.iter_errors(instance):
        return _pointer(list(error.instance_path)), error.message
    return None


def describe(where: tuple[str, str], *, subject: str) -> str:
    """'Invalid arguments: at /limit: "x" is not of type "integer"' (or without the pointer at the root)."""
    pointer, message = where
    return f"{subject}: at {pointer}: {message}" if pointer else f"{subject}: {message}"
